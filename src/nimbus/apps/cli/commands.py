"""The CLI's account, room and message commands. Each is `async def cmd(args, printer) -> exit code`.

They hold no protocol logic: everything goes through `nimbus.client.Client`.
"""

from __future__ import annotations

import argparse
import asyncio
import mimetypes
import sys
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from nimbus.apps.cli.output import EXIT_OK, EXIT_TIMEOUT, CliTimeout, Printer
from nimbus.apps.cli.secrets import read_passphrase, read_password
from nimbus.apps.cli.trust_output import identity_change_warning, undecrypted_text
from nimbus.client.client import Client, profile_at
from nimbus.client.outbox import FlushResult
from nimbus.client.room import Message
from nimbus.store import OutboxEntry
from nimbus.types.errors import NimbusError
from nimbus.types.events import Event, SyncBatch


def _verify(args: argparse.Namespace) -> str | bool:
    return str(args.ca_file) if getattr(args, "ca_file", None) else True


def _passphrase(args: argparse.Namespace, *, new: bool = False) -> str:
    return read_passphrase(args.passphrase_file, args.passphrase_env, new=new)


@asynccontextmanager
async def opened(args: argparse.Namespace) -> AsyncIterator[Client]:
    client = await Client.open(profile_at(args.profile), passphrase=_passphrase(args), verify=_verify(args))
    try:
        yield client
    finally:
        await client.close()


def message_json(room_id: str, m: Message) -> dict[str, Any]:
    e2ee = m.e2ee or {}
    return {
        "encrypted": m.e2ee is not None,
        "decrypted": e2ee.get("decrypted") if m.e2ee is not None else None,
        "cause": e2ee.get("cause"),
        "sender_device": e2ee.get("sender_device"),
        "code": e2ee.get("code"),  # m.room_key.withheld code, when the cause is "withheld"
        "reason": e2ee.get("reason"),
        "trust": e2ee.get("trust"),  # the sender device's trust level when it was decrypted
        "authentic": e2ee.get("authentic"),
        "type": "message",
        "room_id": room_id,
        "event_id": m.event_id,
        "sender": m.sender,
        "ts": m.ts,
        "event_type": m.type,
        "msgtype": m.msgtype,
        "body": m.body,
        "edited": m.edited,
        "redacted": m.redacted,
        "reply_to": m.reply_to,
        "reactions": {k: list(v) for k, v in m.reactions.items()},
    }


def message_text(m: Message) -> str:
    when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(m.ts / 1000))
    if m.redacted:
        return f"[{when}] {m.sender}: (deleted)"
    if m.e2ee is not None and not m.e2ee.get("decrypted"):
        return f"[{when}] {m.sender}: {undecrypted_text(m.e2ee)}"
    if m.type != "m.room.message":
        return f"[{when}] {m.sender} · {m.type}{' ' + m.body if m.body else ''}"
    extra = " (edited)" if m.edited else ""
    reactions = " ".join(f"{k} x{len(v)}" for k, v in m.reactions.items())
    return f"[{when}] {m.sender}: {m.body}{extra}{'  ' + reactions if reactions else ''}"


# --- account ------------------------------------------------------------------------------------


async def login(args: argparse.Namespace, out: Printer) -> int:
    password = read_password(args.password_file, args.password_env)
    passphrase = _passphrase(args, new=not profile_at(args.profile).exists())
    out.progress(f"logging in to {args.homeserver} as {args.user}…")
    client = await Client.login(
        profile_at(args.profile),
        args.homeserver,
        args.user,
        password,
        passphrase=passphrase,
        device_name=args.device_name,
        verify=_verify(args),
        cross_signing=not getattr(args, "no_cross_signing", False),
    )
    try:
        out.progress("first sync…")
        await client.sync_once(0)
        s = client.session
        ident = await client.identity()
        human = f"logged in as {s.user_id} (device {s.device_id}) on {s.homeserver}"
        if ident.device_signed:
            human += "; this device is cross-signed"
        elif ident.master_key is not None:
            human += (
                "\nthis device is NOT cross-signed: your identity was made on another device. Until you"
                f" sign it there (nimbus devices sign {s.device_id}), clients that follow the current"
                " spec (and nimbus in cross_signed mode) will not share room keys with it"
            )
        else:
            human += "; no cross-signing identity (see nimbus identity)"
        out.result(
            {
                "type": "login",
                "user_id": s.user_id,
                "device_id": s.device_id,
                "homeserver": s.homeserver,
                "cross_signed": ident.device_signed,
                "master_key": ident.master_key,
            },
            human,
        )
    finally:
        await client.close()
    return EXIT_OK


async def logout(args: argparse.Namespace, out: Printer) -> int:
    async with opened(args) as client:
        user = client.user_id
        await client.logout()
    out.result({"type": "logout", "user_id": user}, f"logged out {user}")
    return EXIT_OK


async def whoami(args: argparse.Namespace, out: Printer) -> int:
    async with opened(args) as client:
        me = await client.whoami()
        out.result(
            {
                "type": "whoami",
                "user_id": me.user_id,
                "device_id": me.device_id,
                "homeserver": client.session.homeserver,
            },
            f"{me.user_id} (device {me.device_id}) on {client.session.homeserver}",
        )
    return EXIT_OK


# --- rooms --------------------------------------------------------------------------------------


async def rooms(args: argparse.Namespace, out: Printer) -> int:
    async with opened(args) as client:
        await client.sync_once(0)
        for room in await client.rooms():
            flags = [room.membership or "unknown"]
            if room.encrypted:
                flags.append("encrypted")
            if room.is_direct:
                flags.append("direct")
            out.result(
                {
                    "type": "room",
                    "room_id": room.room_id,
                    "name": room.name,
                    "topic": room.topic,
                    "membership": room.membership,
                    "joined": room.joined_count,
                    "invited": room.invited_count,
                    "encrypted": room.encrypted,
                    "direct": room.is_direct,
                },
                f"{room.room_id}  {room.name}  [{', '.join(flags)}; {room.joined_count} joined]",
            )
    return EXIT_OK


async def create_room(args: argparse.Namespace, out: Printer) -> int:
    async with opened(args) as client:
        room_id = await client.create_room(
            name=args.name,
            topic=args.topic,
            invite=args.invite,
            is_direct=args.direct,
            encrypted=not args.unencrypted,
        )
        await client.sync_once(0)  # know the room's state locally (e.g. to send while offline)
        out.result({"type": "room_created", "room_id": room_id}, room_id)
    return EXIT_OK


async def invite(args: argparse.Namespace, out: Printer) -> int:
    async with opened(args) as client:
        await client.invite(args.room, args.user)
    out.result({"type": "invited", "room_id": args.room, "user_id": args.user}, f"invited {args.user}")
    return EXIT_OK


async def join(args: argparse.Namespace, out: Printer) -> int:
    async with opened(args) as client:
        room_id = await client.join(args.room, args.via)
        await client.sync_once(0)
    out.result({"type": "joined", "room_id": room_id}, f"joined {room_id}")
    return EXIT_OK


async def leave(args: argparse.Namespace, out: Printer) -> int:
    async with opened(args) as client:
        await client.leave(args.room)
    out.result({"type": "left", "room_id": args.room}, f"left {args.room}")
    return EXIT_OK


# --- messages -----------------------------------------------------------------------------------


def _texts(args: argparse.Namespace) -> list[str]:
    if args.text != "-":
        return [args.text]
    data = sys.stdin.read()
    if args.lines:
        return [line for line in data.splitlines() if line.strip()]
    data = data.rstrip("\n")
    if not data.strip():
        raise NimbusError("nothing to send: standard input was empty")
    return [data]


def _report_flush(out: Printer, accepted: list[OutboxEntry], result: FlushResult) -> int:
    sent = {e.txn_id: e for e in result.sent}
    failed = {e.txn_id: e for e in result.failed}
    pending = {e.txn_id for e in result.pending}
    for entry in accepted:
        if entry.txn_id in sent:
            out.result(
                {
                    "type": "sent",
                    "room_id": entry.room_id,
                    "event_id": sent[entry.txn_id].event_id,
                    "txn_id": entry.txn_id,
                },
                f"sent {sent[entry.txn_id].event_id}",
            )
    if failed:
        for entry in failed.values():
            out.error(f"the server refused message {entry.txn_id}: {entry.last_error}", "refused")
        return 1
    mine_pending = [e for e in accepted if e.txn_id in pending]
    if mine_pending:
        raise CliTimeout(
            f"{len(mine_pending)} message(s) accepted but not delivered yet ({result.last_error}); they are "
            "kept in the outbox and delivered by the next 'nimbus send', 'outbox flush' or 'tail'"
        )
    return EXIT_OK


async def send(args: argparse.Namespace, out: Printer) -> int:
    texts = _texts(args)
    msgtype = "m.notice" if args.notice else "m.text"
    async with opened(args) as client:
        accepted = [await client.send_text(args.room, text, msgtype=msgtype) for text in texts]
        result = await client.flush_outbox(timeout=args.timeout)
        # Earlier entries (from a crashed run) were delivered first; report ours.
        for entry in result.sent:
            if entry.txn_id not in {a.txn_id for a in accepted}:
                out.progress(f"also delivered an earlier message ({entry.txn_id})")
        return _report_flush(out, accepted, result)


async def outbox(args: argparse.Namespace, out: Printer) -> int:
    async with opened(args) as client:
        if args.action == "flush":
            result = await client.flush_outbox(timeout=args.timeout)
            for entry in result.sent:
                out.result(
                    {
                        "type": "sent",
                        "room_id": entry.room_id,
                        "event_id": entry.event_id,
                        "txn_id": entry.txn_id,
                    },
                    f"sent {entry.event_id} ({entry.txn_id})",
                )
            if result.pending:
                raise CliTimeout(f"{len(result.pending)} message(s) still pending ({result.last_error})")
            return EXIT_OK
        for entry in await client.store.outbox_pending():
            out.result(
                {
                    "type": "pending",
                    "room_id": entry.room_id,
                    "txn_id": entry.txn_id,
                    "attempts": entry.attempts,
                    "last_error": entry.last_error,
                },
                f"{entry.txn_id}  {entry.room_id}  attempts={entry.attempts}  {entry.last_error or ''}",
            )
    return EXIT_OK


def warn_identity_changes(client: Client, out: Printer) -> None:
    """Identity changes the last sync revealed, as warnings on stderr (never in the --json stream)."""
    for change in client.crypto.identity_changes:
        out.progress(identity_change_warning(change))
    client.crypto.identity_changes.clear()


async def history(args: argparse.Namespace, out: Printer) -> int:
    async with opened(args) as client:
        await client.sync_once(0)
        warn_identity_changes(client, out)
        for m in await client.history(args.room, args.limit):
            out.result(message_json(args.room, m), message_text(m))
    return EXIT_OK


def _is_new_message(event: Event) -> bool:
    """A message worth a line of its own: not an edit (edits update the message they replace).
    Encrypted events count; the room model shows them decrypted (or why they could not be)."""
    if event.type not in ("m.room.message", "m.room.encrypted"):
        return False
    relation = event.content.get("m.relates_to")
    return not (isinstance(relation, dict) and relation.get("rel_type") == "m.replace")


class _TailTranslation:
    """What `tail` adds to each message when translating (--translate, or the room's auto setting):
    the translation into `target` via MessageTranslator (cached per event, encrypted at rest)."""

    def __init__(self, client: Client, target: str) -> None:
        from nimbus.ai.translation import MessageTranslator

        self.target = target
        self.service = MessageTranslator(client.store)

    @staticmethod
    async def for_room(args: argparse.Namespace, client: Client) -> _TailTranslation | None:
        from nimbus.ai.translation import auto_translate, default_language

        setting = await auto_translate(client.store, args.room)
        wanted = args.translate if args.translate is not None else bool(setting and setting.on)
        if not wanted:
            return None
        target = args.to or (setting.target if setting else None) or default_language()
        return _TailTranslation(client, target)

    async def add(self, m: Message, obj: dict[str, Any], text: str) -> str:
        """Sets translation/translation_source/translation_status on `obj`; returns the text line."""
        from nimbus.ai.interfaces import CapabilityMissing
        from nimbus.ai.translation import TranslationFailed

        obj.update(translation=None, translation_source=None, translation_status=None)
        undecrypted = m.e2ee is not None and not m.e2ee.get("decrypted")
        if m.type != "m.room.message" or m.redacted or undecrypted or not m.body:
            return text
        if m.msgtype not in ("m.text", "m.notice", "m.emote"):
            return text
        try:
            t = await self.service.translate_message(m.event_id, m.body, self.target)
            status, source, translated = t.status, t.source, t.text
        except CapabilityMissing as exc:  # the pair is not installed: say which package adds it
            status, source, translated = "no-engine", None, None
            obj["translation_error"] = str(exc)
        except TranslationFailed as exc:
            status, source, translated = "failed", None, None
            obj["translation_error"] = str(exc)
        obj.update(translation=translated, translation_source=source, translation_status=status)
        if status == "translated" and translated is not None:
            return f"{text}\n    [{source}->{self.target}] {translated}"
        if status in ("no-engine", "failed"):
            return f"{text}\n    [not translated: {obj.get('translation_error', status)}]"
        return text


async def tail(args: argparse.Namespace, out: Printer) -> int:
    """Follow a room: catch up silently, then print each new message as it arrives."""
    async with opened(args) as client:
        await client.sync_once(0)  # what is already there is history, not news
        warn_identity_changes(client, out)
        await client.room(args.room)  # a clear error for an unknown room, before waiting
        translating = await _TailTranslation.for_room(args, client)
        seen = 0
        done = asyncio.Event()

        async def on_batch(batch: SyncBatch, _confirmed: list[OutboxEntry]) -> None:
            nonlocal seen
            warn_identity_changes(client, out)
            new_ids = [
                e.event_id
                for update in batch.rooms
                if update.room_id == args.room
                for e in update.timeline
                if _is_new_message(e)
            ]
            if not new_ids:
                return
            room = await client.room(args.room, limit=200)
            by_id = {m.event_id: m for m in room.timeline}
            for event_id in new_ids:
                m = by_id.get(event_id)
                if m is None or done.is_set() or m.type not in ("m.room.message", "m.room.encrypted"):
                    continue  # edits fold into their message; reactions and the like are no lines
                obj, text = message_json(args.room, m), message_text(m)
                if translating is not None:
                    text = await translating.add(m, obj, text)
                out.result(obj, text)
                seen += 1
                if args.count is not None and seen >= args.count:
                    done.set()

        client.sync.listeners.append(on_batch)
        into = f", translating into {translating.target}" if translating is not None else ""
        out.progress(f"following {args.room}{into} (Ctrl-C to stop)")
        stop = asyncio.Event()
        runner = asyncio.ensure_future(client.run(stop))
        waiter = asyncio.ensure_future(done.wait())
        try:
            finished, _ = await asyncio.wait(
                [runner, waiter], timeout=args.timeout, return_when=asyncio.FIRST_COMPLETED
            )
            if runner in finished:
                runner.result()  # the sync loop only ends on a dead session: raise it
            if not done.is_set() and args.timeout is not None:
                raise CliTimeout(
                    f"{seen} of {args.count if args.count else 'the'} message(s) arrived in {args.timeout:g}s"
                )
        finally:
            stop.set()
            waiter.cancel()
            await asyncio.gather(runner, return_exceptions=True)
    return EXIT_OK if done.is_set() or args.timeout is None else EXIT_TIMEOUT


async def devices(args: argparse.Namespace, out: Printer) -> int:
    async with opened(args) as client:
        if args.action == "delete":
            if not args.device:
                raise NimbusError("which device? 'nimbus devices delete DEVICE_ID'")
            password = read_password(args.password_file, args.password_env, "Password (to confirm): ")
            await client.delete_device(args.device, password)
            out.result({"type": "device_deleted", "device_id": args.device}, f"deleted device {args.device}")
            return EXIT_OK
        user = client.user_id  # another user's devices: trust_commands.user_devices
        known = await client.device_keys(user)
        for d in await client.devices():
            current = d.device_id == client.device_id
            keys = known.get(d.device_id, {})
            out.result(
                {
                    "type": "device",
                    "user_id": user,
                    "device_id": d.device_id,
                    "display_name": d.display_name,
                    "last_seen_ts": d.last_seen_ts,
                    "current": current,
                    "curve25519": keys.get("curve25519"),
                    "ed25519": keys.get("ed25519"),
                },
                f"{d.device_id}  {d.display_name or ''}{'  (this device)' if current else ''}"
                f"  ed25519 {keys.get('ed25519') or '(no keys published)'}",
            )
    return EXIT_OK


async def send_file(args: argparse.Namespace, out: Printer) -> int:
    path = Path(args.path)
    data = await asyncio.to_thread(path.read_bytes)
    mimetype = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
    async with opened(args) as client:
        out.progress(f"encrypting and uploading {len(data)} bytes…")  # no file name: it may be private
        entry = await client.send_file(args.room, data, path.name, mimetype)
        result = await client.flush_outbox(timeout=args.timeout)
        return _report_flush(out, [entry], result)


async def download(args: argparse.Namespace, out: Printer) -> int:
    async with opened(args) as client:
        await client.sync_once(0)
        data, name = await client.download(args.room, args.event_id)
    target = Path(args.out)
    await asyncio.to_thread(target.write_bytes, data)
    out.result(
        {
            "type": "downloaded",
            "event_id": args.event_id,
            "name": name,
            "bytes": len(data),
            "path": str(target),
        },
        f"saved {name} ({len(data)} bytes) to {target}",
    )
    return EXIT_OK
