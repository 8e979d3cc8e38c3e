"""The CLI's on-device AI commands: `nimbus suggest ROOM`, `nimbus catchup ROOM`.

They hold no AI logic (that is nimbus.ai) and no protocol logic (nimbus.client); output follows
commands.py: readable lines, or one JSON object per line with --json. Nothing is sent: suggestions are
printed for the user to choose from. `--llm` uses the installed text-generation model (the
registry's `text_generator()`; without one: exit 1 naming what to install), falling back to the
fast path / extractive summary when the model writes nothing usable.
"""

from __future__ import annotations

import argparse
import asyncio

from nimbus.ai import registry
from nimbus.ai.catchup import catch_up, unread
from nimbus.ai.replies import SmartReplies, lines_from
from nimbus.apps.cli.commands import opened
from nimbus.apps.cli.output import EXIT_OK, Printer
from nimbus.types.ids import parse_room_id


async def suggest(args: argparse.Namespace, out: Printer) -> int:
    generator = registry.text_generator() if getattr(args, "llm", False) else None  # before any I/O
    async with opened(args) as client:
        await client.sync_once(0)
        room = await client.room(args.room, limit=40)
        me = str(client.user_id)
    lines = lines_from(room.timeline)
    replies = SmartReplies(registry.embedder(), registry.language_identifier(["en", "es", "de", "fr"]))
    result = await asyncio.to_thread(
        replies.suggest, lines, me, default_language=args.language, generator=generator
    )
    if not result.suggestions:
        out.result(
            {"type": "suggestions", "room_id": args.room, "reason": result.reason, "suggestions": []},
            f"no suggestions ({result.reason})",
        )
    for i, s in enumerate(result.suggestions, 1):
        out.result(
            {
                "type": "suggestion",
                "room_id": args.room,
                "rank": i,
                "text": s.text,
                "intent": s.intent,
                "score": s.score,
                "language": result.language,
                "reply_to": lines[-1].event_id,
            },
            f"{i}. {s.text}",
        )
    return EXIT_OK


async def catchup(args: argparse.Namespace, out: Printer) -> int:
    generator = registry.text_generator() if getattr(args, "llm", False) else None  # before any I/O
    async with opened(args) as client:
        await client.sync_once(0)
        room = await client.room(args.room, limit=max(args.limit * 2, 100))
        # Spec: https://spec.matrix.org/v1.12/client-server-api/#fully-read-markers (room account data)
        marker = await client.store.account_data("m.fully_read", parse_room_id(args.room))
        me = str(client.user_id)
    after = marker.get("event_id") if isinstance(marker, dict) else None
    lines = unread(
        lines_from(room.timeline), after_event_id=after if isinstance(after, str) else None, last=args.limit
    )
    members = {str(u): m.displayname for u, m in room.members.items()}
    result = await asyncio.to_thread(
        catch_up,
        lines,
        registry.embedder(),
        me,
        display_name=members.get(me),
        members=members,
        generator=generator,
    )
    out.result(
        {
            "type": "catchup",
            "room_id": args.room,
            "unread": result.unread,
            "participants": result.participants,
        },
        f"{result.unread} unread message(s) in {room.name}",
    )
    if result.abstract is not None:
        out.result({"type": "abstract", "room_id": args.room, "text": result.abstract}, result.abstract)
    for s in result.summary if result.abstract is None else []:
        out.result(
            {
                "type": "summary",
                "room_id": args.room,
                "event_id": s.event_id,
                "sender": s.sender,
                "ts": s.ts,
                "text": s.text,
            },
            f"• {members.get(s.sender) or s.sender}: {s.text}",
        )
    for a in result.actions:
        owner = members.get(a.owner or "") or a.owner or "?"
        out.result(
            {
                "type": "action",
                "room_id": args.room,
                "event_id": a.event_id,
                "kind": a.kind,
                "owner": a.owner,
                "what": a.what,
                "when": a.when,
                "sender": a.sender,
            },
            f"☐ {owner}: {a.what}{' (' + a.when + ')' if a.when else ''}",
        )
    for m in result.mentions:
        out.result(
            {
                "type": "mention",
                "room_id": args.room,
                "event_id": m.event_id,
                "sender": m.sender,
                "ts": m.ts,
                "body": m.text,
            },
            f"@ {members.get(m.sender) or m.sender}: {m.text}",
        )
    return EXIT_OK
