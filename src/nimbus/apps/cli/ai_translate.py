"""`nimbus translate`: on-device translation of a room's recent messages, and a preview of a draft.

- `nimbus translate ROOM [--to LANG] [--limit N]` prints the room's recent text messages with their
  original and translation (each message's language detected on the device; with --json, one object
  per line). Translations are cached per (event, language), encrypted at rest in the profile's store.
- `nimbus translate --text TEXT --to LANG [--from LANG]` prints the translation of a draft
  (translate-before-send): nothing is sent; sending it stays the user's choice (`nimbus send`). This
  mode does not open the account at all.
Nothing here opens a network connection except the sync any room command does with your own
homeserver; message text goes only to the local Apertium process.
"""

from __future__ import annotations

import argparse
import os

from nimbus.ai.search import message_text
from nimbus.ai.translation import MessageTranslator, Translation
from nimbus.apps.cli.commands import opened
from nimbus.apps.cli.output import EXIT_ERROR, EXIT_OK, Printer


def default_language() -> str:
    """The user's language from the locale environment (LC_ALL, LC_MESSAGES, LANG), else English."""
    for name in ("LC_ALL", "LC_MESSAGES", "LANG"):
        value = os.environ.get(name, "")
        code = value.split(".")[0].split("_")[0].lower()
        if len(code) in (2, 3) and code.isalpha() and code not in ("c", "posix"):
            return code
    return "en"


def _line(sender: str, body: str, t: Translation) -> str:
    if t.status == "translated" and t.text is not None:
        return f"{sender}: {body}\n    [{t.source}->{t.target}] {t.text}"
    if t.status == "no-engine":
        return f"{sender}: {body}\n    [{t.source}->{t.target}: pair not installed]"
    return f"{sender}: {body}"


async def translate(args: argparse.Namespace, out: Printer) -> int:
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
