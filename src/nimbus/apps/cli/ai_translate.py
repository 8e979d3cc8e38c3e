"""`nimbus translate`: on-device translation of a room's recent messages, and a preview of a draft.

- `nimbus translate ROOM [--to LANG] [--limit N]` prints the room's recent text messages with their
  original and translation (each message's language detected on the device; with --json, one object
  per line). Translations are cached per (event, language), encrypted at rest in the profile's store.
- `nimbus translate --text TEXT --to LANG [--from LANG]` prints the translation of a draft
  (translate-before-send): nothing is sent; sending it stays the user's choice (`nimbus send`). This
  mode does not open the account at all.
- `nimbus translate ROOM --auto on|off [--to LANG]` stores whether `nimbus tail ROOM` translates new
  messages by itself (a local setting, encrypted at rest in the profile's store; nothing is sent).
Nothing here opens a network connection except the sync any room command does with your own
homeserver; message text goes only to the local Apertium process.
"""

from __future__ import annotations

import argparse

from nimbus.ai.search import message_text
from nimbus.ai.translation import (
    AutoTranslate,
    MessageTranslator,
    Translation,
    auto_translate,
    default_language,
    set_auto_translate,
)
from nimbus.apps.cli.commands import opened
from nimbus.apps.cli.output import EXIT_ERROR, EXIT_OK, Printer


def _line(sender: str, body: str, t: Translation) -> str:
    if t.status == "translated" and t.text is not None:
        return f"{sender}: {body}\n    [{t.source}->{t.target}] {t.text}"
    if t.status == "no-engine":
        return f"{sender}: {body}\n    [{t.source}->{t.target}: pair not installed]"
    return f"{sender}: {body}"


__all__ = ["default_language", "translate"]


async def _set_auto(args: argparse.Namespace, out: Printer) -> int:
    setting = AutoTranslate(args.auto == "on", args.to)
    async with opened(args) as client:
        before = await auto_translate(client.store, args.room)
        if not setting.on and setting.target is None and before is not None:
            setting = AutoTranslate(False, before.target)  # off keeps the chosen language for later
        await set_auto_translate(client.store, args.room, setting)
    shown = setting.target or f"{default_language()} (from the locale)"
    out.result(
        {"type": "auto_translate", "room_id": args.room, "auto": setting.on, "target": setting.target},
        f"auto-translate {'on' if setting.on else 'off'} in {args.room}"
        + (f", into {shown}" if setting.on else ""),
    )
    return EXIT_OK


async def translate(args: argparse.Namespace, out: Printer) -> int:
    if getattr(args, "auto", None) is not None:
        if not args.room:
            out.error("--auto needs a ROOM", "usage")
            return EXIT_ERROR
        return await _set_auto(args, out)
    target = args.to or default_language()
    if args.text is not None:
        preview = await MessageTranslator(None).translate_text(args.text, target, args.source)
        if preview.text is None:
            out.error(
                f"not translated: {preview.status} (source {preview.source or 'unknown'})", preview.status
            )
            return EXIT_ERROR
        out.result(
            {
                "type": "translation_preview",
                "source": preview.source,
                "target": target,
                "text": args.text,
                "translation": preview.text,
                "engine": preview.engine,
            },
            preview.text,
        )
        return EXIT_OK
    if not args.room:
        out.error("give a ROOM, or --text TEXT to preview a translation", "usage")
        return EXIT_ERROR
    async with opened(args) as client:
        await client.sync_once(0)
        events = await client.decrypted_timeline(args.room, limit=max(args.limit * 5, 100))
        texts = [(e, body) for e in events if (body := message_text(e)) is not None][-args.limit :]
        service = MessageTranslator(client.store)
        results = await service.translate_messages([(e.event_id, body) for e, body in texts], target)
        for (event, body), t in zip(texts, results, strict=True):
            out.result(
                {
                    "type": "translation",
                    "room_id": args.room,
                    "event_id": event.event_id,
                    "sender": event.sender,
                    "ts": event.origin_server_ts,
                    "body": body,
                    "source": t.source,
                    "target": target,
                    "translation": t.text,
                    "status": t.status,
                    "cached": t.cached,
                },
                _line(str(event.sender), body, t),
            )
    return EXIT_OK
