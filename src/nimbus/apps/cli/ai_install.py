"""`nimbus ai install SOURCE` and `nimbus ai remove NAME`: on-device model management.

- `nimbus ai install PATH` installs a local model: a .gguf file (text generation), an .argosmodel
  file, a CTranslate2 translation folder, or a Hugging Face Marian/Opus-MT folder (converted once to
  CTranslate2 int8). `--languages en-de` names the pair when the model does not say.
- `nimbus ai install hf:ORG/NAME@REVISION --sha256 FILE=HEX,...` downloads a Marian model from the
  Hugging Face hub, checks every file against its pinned SHA-256, then installs it. This is the only
  command whose AI part opens a network connection, and it sends no message content.
- Models go to $NIMBUS_MODELS_DIR or ~/.local/share/nimbus/models; `nimbus ai status` lists them.
No account is opened: these commands do not need a profile or a homeserver.
"""

from __future__ import annotations

import argparse
import asyncio
from typing import Any

from nimbus.ai import models
from nimbus.apps.cli.output import EXIT_OK, Printer


def describe(m: models.InstalledModel) -> dict[str, Any]:
    return {
        "name": m.name,
        "kind": m.kind,
        "engine": m.engine,
        "languages": [f"{s}-{t}" for s, t in m.languages],
        "size_bytes": m.size_bytes,
        "path": str(m.path),
        "source": m.source,
    }


def summary(m: models.InstalledModel) -> str:
    langs = ", ".join(f"{s}->{t}" for s, t in m.languages) or "-"
    return f"{m.name:<28} {m.kind:<16} {m.engine:<12} {m.size_bytes / 1e6:>8.1f} MB  languages: {langs}"


async def install(args: argparse.Namespace, out: Printer) -> int:
    from nimbus.ai.model_hub import install_from_hub, parse_hf_source

    if parse_hf_source(args.source) is not None:
        model = await asyncio.to_thread(
            install_from_hub,
            args.source,
            args.sha256,
            name=args.name,
            languages=args.languages,
            force=args.force,
            progress=out.progress,
        )
    else:
        if args.sha256:
            out.progress("--sha256 applies to hf: sources only; ignored for a local path")
        out.progress(f"installing {args.source}")
        model = await asyncio.to_thread(
            models.install, args.source, name=args.name, languages=args.languages, force=args.force
        )
    out.result(dict(describe(model), type="ai_model_installed"), "installed " + summary(model))
    return EXIT_OK


async def remove(args: argparse.Namespace, out: Printer) -> int:
    model = await asyncio.to_thread(models.remove, args.name)
    out.result(dict(describe(model), type="ai_model_removed"), f"removed {model.name} ({model.path})")
    return EXIT_OK


def add_subcommands(ai_sub: Any, common: argparse.ArgumentParser) -> None:
    """Register `ai install` and `ai remove` under `nimbus ai`."""
    p = ai_sub.add_parser(
        "install",
        help="install a model: a .gguf, .argosmodel, CTranslate2 or Marian folder, or hf:ORG/NAME@REV",
        parents=[common],
    )
    p.add_argument("source", help="a file or folder, or hf:ORG/NAME@REVISION (with --sha256)")
    p.add_argument(
        "--sha256",
        help="hf: sources: FILE=HEX,... for " + ", ".join(("config.json", "model.safetensors",
             "source.spm", "target.spm", "vocab.json")) + " (bare HEX values: in that order)",
    )  # fmt: skip
    p.add_argument("--name", help="the installed model's name (default: from the source)")
    p.add_argument("--languages", metavar="SRC-TGT", help="the language pair, when the model does not say")
    p.add_argument("--force", action="store_true", help="replace an installed model of the same name")
    p.set_defaults(func=install)
    p = ai_sub.add_parser("remove", help="delete an installed model", parents=[common])
    p.add_argument("name", help="the model's name (as `nimbus ai status` shows it)")
    p.set_defaults(func=remove)
