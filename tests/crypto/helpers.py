"""A hand-driven "raw" device on plain vodozemac, to send what a nimbus machine never would."""

from __future__ import annotations

import base64
import json
from typing import Any

import vodozemac

from nimbus.crypto.canonical_json import sign_json
from tests.scenarios.harness import FakeServer


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode().rstrip("=")


class RawDevice:
    def __init__(self, server: FakeServer, user: str, device: str) -> None:
        self.server, self.user, self.device = server, user, device
        self.account = vodozemac.Account()
        self.sessions: dict[str, vodozemac.Session] = {}

    @property
    def curve(self) -> str:
        return self.account.curve25519_key.to_base64()

    @property
    def ed(self) -> str:
        return self.account.ed25519_key.to_base64()

    def sign(self, obj: dict[str, Any]) -> dict[str, Any]:
        return sign_json(obj, lambda m: self.account.sign(m).to_base64(), self.user, f"ed25519:{self.device}")

    def device_keys(self, **override: Any) -> dict[str, Any]:
        obj = {
            "user_id": self.user,
            "device_id": self.device,
            "algorithms": ["m.olm.v1.curve25519-aes-sha2", "m.megolm.v1.aes-sha2"],
            "keys": {f"curve25519:{self.device}": self.curve, f"ed25519:{self.device}": self.ed},
        }
        obj.update(override)
        return self.sign(obj)

    def publish(self, keys: dict[str, Any] | None = None) -> None:
        self.server.device_keys.setdefault(self.user, {})[self.device] = keys or self.device_keys()
        for (_u, _d), changed in list(self.server.changed.items()):
            changed.add(self.user)
        self.account.generate_one_time_keys(5)
        for kid, key in self.account.one_time_keys.items():
            self.server.otks.setdefault((self.user, self.device), {})[f"signed_curve25519:{kid}"] = self.sign(
                {"key": key.to_base64()}
            )
        self.account.mark_keys_as_published()

    def olm_to(self, user: str, device: str, payload: dict[str, Any]) -> dict[str, Any]:
        """An Olm to-device event for a nimbus device (claims its OTK on first use)."""
        their = self.server.device_keys[user][device]
        curve = their["keys"][f"curve25519:{device}"]
        if curve not in self.sessions:
            claimed = self.server._claim({"one_time_keys": {user: {device: "signed_curve25519"}}})
            [obj] = claimed["one_time_keys"][user][device].values()
            self.sessions[curve] = self.account.create_outbound_session(
                vodozemac.Curve25519PublicKey.from_base64(curve),
                vodozemac.Curve25519PublicKey.from_base64(obj["key"]),
            )
        mtype, body = self.sessions[curve].encrypt(json.dumps(payload).encode()).to_parts()
        return {
            "type": "m.room.encrypted",
            "sender": self.user,
            "content": {
                "algorithm": "m.olm.v1.curve25519-aes-sha2",
                "sender_key": self.curve,
                "ciphertext": {curve: {"type": mtype, "body": b64(body)}},
            },
        }

    def payload(
        self, user: str, device: str, etype: str, content: dict[str, Any], **override: Any
    ) -> dict[str, Any]:
        their = self.server.device_keys[user][device]
        p = {
            "type": etype,
            "content": content,
            "sender": self.user,
            "recipient": user,
            "recipient_keys": {"ed25519": their["keys"][f"ed25519:{device}"]},
            "keys": {"ed25519": self.ed},
        }
        p.update(override)
        return p

    def room_key(self, room_id: str) -> tuple[vodozemac.GroupSession, dict[str, Any]]:
        g = vodozemac.GroupSession()
        return g, {
            "algorithm": "m.megolm.v1.aes-sha2",
            "room_id": room_id,
            "session_id": g.session_id,
            "session_key": g.session_key.to_base64(),
        }


def megolm_content(g: vodozemac.GroupSession, payload: dict[str, Any]) -> dict[str, Any]:
    return {
        "algorithm": "m.megolm.v1.aes-sha2",
        "ciphertext": g.encrypt(json.dumps(payload).encode()).to_base64(),
        "session_id": g.session_id,
    }
