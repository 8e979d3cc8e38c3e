"""A tiny in-memory "homeserver" for the E2EE protocol: keys upload/query/claim and to-device routing.

A protocol test harness (not a mock of a user component): it keeps the server-side state the spec
describes and records everything that passed through it, so tests can assert on what left a device.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote

from nimbus.api.request import Request
from nimbus.crypto.machine import OlmMachine, SharingMode
from nimbus.store.crypto_memory import MemoryCryptoStore

PICKLE_KEY = bytes(range(32))


class ServerError(Exception):
    pass


@dataclass
class FakeServer:
    device_keys: dict[str, dict[str, dict[str, Any]]] = field(default_factory=dict)
    otks: dict[tuple[str, str], dict[str, dict[str, Any]]] = field(default_factory=dict)
    fallback: dict[tuple[str, str], dict[str, dict[str, Any]]] = field(default_factory=dict)
    used_fallback: set[tuple[str, str]] = field(default_factory=set)
    all_otks: dict[tuple[str, str, str], str] = field(default_factory=dict)  # (user, dev, key id) → key
    inbox: dict[tuple[str, str], list[dict[str, Any]]] = field(default_factory=dict)
    changed: dict[tuple[str, str], set[str]] = field(default_factory=dict)
    txns: set[tuple[str, str, str]] = field(default_factory=set)
    to_device_log: list[tuple[str, str, str, dict[str, Any]]] = field(default_factory=list)
    upload_log: list[tuple[str, str, dict[str, Any]]] = field(default_factory=list)
    claim_log: list[dict[str, Any]] = field(default_factory=list)
    # cross-signing (spec: "Cross-signing"): user → {"master_key": .., "self_signing_key": .., ...}
    signing_keys: dict[str, dict[str, dict[str, Any]]] = field(default_factory=dict)

    def handle(self, req: Request, user: str, device: str) -> dict[str, Any]:
        body = json.loads(json.dumps(req.json or {}))
        path = req.path
        if path.endswith("/keys/upload"):
            return self._upload(body, user, device)
        if path.endswith("/keys/query"):
            asked = list(body["device_keys"])
            out: dict[str, Any] = {
                "device_keys": {u: dict(self.device_keys.get(u, {})) for u in asked},
                "failures": {},
            }
            for kind, field_name in (
                ("master_key", "master_keys"),
                ("self_signing_key", "self_signing_keys"),
                ("user_signing_key", "user_signing_keys"),
            ):
                out[field_name] = {
                    u: self.signing_keys[u][kind]
                    for u in asked
                    if kind in self.signing_keys.get(u, {}) and (kind != "user_signing_key" or u == user)
                }
            return out
        if path.endswith("/keys/device_signing/upload"):
            self.signing_keys[user] = {k: v for k, v in body.items() if k != "auth"}
            self._changed(user)
            return {}
        if path.endswith("/keys/signatures/upload"):
            for u, objs in body.items():
                for key_id, obj in objs.items():
                    target = self.device_keys.get(u, {}).get(key_id)
                    if target is None and self.signing_keys.get(u, {}).get("master_key", {}).get(
                        "keys", {}
                    ).get(f"ed25519:{key_id}"):
                        target = self.signing_keys[u]["master_key"]
                    if target is None:
                        continue
                    for signer, sigs in obj.get("signatures", {}).items():
                        target.setdefault("signatures", {}).setdefault(signer, {}).update(sigs)
                self._changed(u)
            return {"failures": {}}
        if path.endswith("/keys/claim"):
            return self._claim(body)
        if "/sendToDevice/" in path:
            parts = path.split("/")
            etype, txn = unquote(parts[-2]), unquote(parts[-1])
            if (user, device, txn) in self.txns:
                return {}
            self.txns.add((user, device, txn))
            for to_user, devs in body["messages"].items():
                for to_dev, content in devs.items():
                    targets = list(self.device_keys.get(to_user, {})) if to_dev == "*" else [to_dev]
                    for t in targets:
                        self.inbox.setdefault((to_user, t), []).append(
                            {"type": etype, "sender": user, "content": content}
                        )
                        self.to_device_log.append((to_user, t, etype, content))
            return {}
        raise ServerError(f"unknown endpoint {path}")

    def _changed(self, user: str) -> None:
        for u, devs in self.device_keys.items():
            for d in devs:
                self.changed.setdefault((u, d), set()).add(user)

    def _upload(self, body: dict[str, Any], user: str, device: str) -> dict[str, Any]:
        self.upload_log.append((user, device, body))
        if "device_keys" in body:
            old = self.device_keys.get(user, {}).get(device)
            if old is not None and old["keys"] != body["device_keys"]["keys"]:
                raise ServerError("device keys changed")
            self.device_keys.setdefault(user, {})[device] = body["device_keys"]
            for u, devs in self.device_keys.items():
                for d in devs:
                    self.changed.setdefault((u, d), set()).add(user)
        for key_id, obj in body.get("one_time_keys", {}).items():
            seen = self.all_otks.get((user, device, key_id))
            if seen is not None and seen != obj["key"]:
                raise ServerError(f"one-time key id {key_id} reused with another key")
            self.all_otks[(user, device, key_id)] = obj["key"]
            self.otks.setdefault((user, device), {})[key_id] = obj
        if body.get("fallback_keys"):
            self.fallback[(user, device)] = dict(body["fallback_keys"])
            self.used_fallback.discard((user, device))
        return {"one_time_key_counts": {"signed_curve25519": len(self.otks.get((user, device), {}))}}

    def _claim(self, body: dict[str, Any]) -> dict[str, Any]:
        self.claim_log.append(body)
        out: dict[str, dict[str, Any]] = {}
        for u, devs in body["one_time_keys"].items():
            for d in devs:
                pool = self.otks.get((u, d), {})
                if pool:
                    key_id = sorted(pool)[0]
                    out.setdefault(u, {})[d] = {key_id: pool.pop(key_id)}
                elif self.fallback.get((u, d)):
                    self.used_fallback.add((u, d))
                    out.setdefault(u, {})[d] = dict(self.fallback[(u, d)])
        return {"one_time_keys": out, "failures": {}}

    def sync_for(self, user: str, device: str) -> dict[str, Any]:
        to_device = self.inbox.pop((user, device), [])
        changed = sorted(self.changed.pop((user, device), set()))
        fallback_types = (
            []
            if (user, device) in self.used_fallback or not self.fallback.get((user, device))
            else ["signed_curve25519"]
        )
        return {
            "to_device": to_device,
            "changed": changed,
            "left": [],
            "one_time_key_counts": {"signed_curve25519": len(self.otks.get((user, device), {}))},
            "unused_fallback_key_types": fallback_types,
        }


class Device:
    """One nimbus device: a machine on an in-memory store, driven the way the client drives it."""

    def __init__(
        self, server: FakeServer, user: str, device: str, store: MemoryCryptoStore | None = None
    ) -> None:
        self.server = server
        self.user = user
        self.device = device
        self.store = store or MemoryCryptoStore()
        self.machine: OlmMachine
        self.now = 1_000_000

    @classmethod
    async def create(
        cls, server: FakeServer, user: str, device: str, mode: SharingMode = SharingMode.LEGACY
    ) -> Device:
        """A device with published keys. The protocol scenarios that predate cross-signing run in
        LEGACY sharing mode; the cross-signing scenarios pass CROSS_SIGNED and call `bootstrap`."""
        me = cls(server, user, device)
        await me.reload()
        await me.machine.set_sharing_mode(mode)
        await me.commit()
        await me.flush()
        return me

    async def reload(self) -> None:
        """A new machine on the same store (what a restart does); uncommitted changes are lost."""
        self.machine = await OlmMachine.load(self.store, self.user, self.device, PICKLE_KEY)
        await self.commit()

    async def bootstrap(self) -> None:
        """Create this user's cross-signing identity from this device, the way the client does."""
        plan = await self.machine.bootstrap_cross_signing()
        await self.commit()
        self.server.signing_keys[self.user] = dict(plan.keys)
        self.server._changed(self.user)
        self.server.handle(
            Request("POST", "/_matrix/client/v3/keys/signatures/upload", json=plan.signatures),
            self.user,
            self.device,
        )
        await self.machine.cross_signing_done()
        await self.commit()
        await self.flush()

    async def commit(self) -> None:
        await self.store.crypto_save(self.machine.take_changes())

    async def send(self, request_id: str, req: Request) -> None:
        await self.commit()  # state is saved before anything leaves the process
        response = self.server.handle(req, self.user, self.device)
        await self.machine.mark_request_as_sent(request_id, response)
        await self.commit()

    async def flush(self) -> None:
        for _ in range(10):
            requests = await self.machine.outgoing_requests()
            if not requests:
                return
            for r in requests:
                await self.send(r.request_id, r.request)
        raise AssertionError("outgoing requests never settle")

    async def sync(self) -> list[Any]:
        s = self.server.sync_for(self.user, self.device)
        results = await self.machine.receive_sync_changes(now_ms=self.now, **s)
        await self.commit()
        await self.flush()
        return results

    async def share(self, room_id: str, members: list[str], visibility: str = "shared", **kw: Any) -> None:
        for _ in range(10):
            requests = await self.machine.share_room_key(
                room_id, members, history_visibility=visibility, now_ms=self.now, **kw
            )
            if not requests or all(r.kind == "to_device" for r in requests):
                for r in requests:
                    await self.send(r.request_id, r.request)
                await self.flush()
                return
            for r in requests:
                await self.send(r.request_id, r.request)
        raise AssertionError("share_room_key never settles")

    async def encrypt(self, room_id: str, body: str, **kw: Any) -> dict[str, Any]:
        await self.share(room_id, kw.pop("members"), **kw)
        content = await self.machine.encrypt_room_event(
            room_id, "m.room.message", {"msgtype": "m.text", "body": body}, now_ms=self.now
        )
        await self.commit()
        return content


def room_event(room_id: str, sender: str, content: dict[str, Any], event_id: str, ts: int = 1) -> Any:
    from nimbus.types.events import parse_event

    raw = {
        "event_id": event_id,
        "type": "m.room.encrypted",
        "sender": sender,
        "origin_server_ts": ts,
        "content": content,
        "room_id": room_id,
    }
    return parse_event(raw, room_id)
