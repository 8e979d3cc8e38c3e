"""`nimbus`: the command line for people and scripts.

Every command takes `--json` (one JSON object per line on stdout) and `--profile DIR` (the account's
data directory; see nimbus.client.profile). Exit codes: 0 success, 1 error, 2 timeout.
Commands that talk to a homeserver hold the profile's write lock while they run.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from collections.abc import Sequence

from nimbus.apps.cli import ai_commands, ai_install, ai_search, ai_translate, commands, demo, trust_commands
from nimbus.apps.cli.output import EXIT_ERROR, EXIT_TIMEOUT, CliTimeout, Printer
from nimbus.homeserver import cli as homeserver_cli
from nimbus.types.errors import NimbusError


def build_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--json", action="store_true", help="one JSON object per line on stdout")
    common.add_argument("--profile", metavar="DIR", help="profile directory (default: per-user data dir)")
    common.add_argument("--ca-file", metavar="PEM", help="trust this CA for the homeserver's TLS")
    common.add_argument("-v", "--verbose", action="store_true", help="log what happens (never secrets)")
    common.add_argument(
        "--passphrase-file", metavar="FILE", help="the profile store's passphrase, from a file"
    )
    common.add_argument(
        "--passphrase-env",
        metavar="VAR",
        help="... from an environment variable (default: $NIMBUS_PASSPHRASE)",
    )

    parser = argparse.ArgumentParser(prog="nimbus", description="nimbus: a privacy-first Matrix messenger.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def add(name: str, help: str) -> argparse.ArgumentParser:
        return sub.add_parser(name, help=help, parents=[common], description=help)

    p = add("login", "log in and keep the session in the profile")
    p.add_argument("homeserver", help="homeserver URL, or a server name resolved through .well-known")
    p.add_argument("user", help="user id (@name:server) or localpart")
    p.add_argument("--password-file", metavar="FILE")
    p.add_argument("--password-env", metavar="VAR")
    p.add_argument("--device-name", default="nimbus CLI")
    p.add_argument(
        "--no-cross-signing",
        action="store_true",
        help="do not create a cross-signing identity on a first login (the device stays unsigned); "
        "for tests, and for users who set their identity up in another client",
    )
    p.set_defaults(func=commands.login)

    add(
        "logout", "log out: the server forgets the device's token, the profile forgets the session"
    ).set_defaults(func=commands.logout)
    add("whoami", "the logged-in user and device").set_defaults(func=commands.whoami)
    add("rooms", "rooms you are in or invited to").set_defaults(func=commands.rooms)

    p = add("create-room", "create a room and print its id")
    p.add_argument("--name")
    p.add_argument("--topic")
    p.add_argument("--invite", action="append", default=[], metavar="USER")
    p.add_argument("--direct", action="store_true", help="a direct chat (recorded in m.direct)")
    p.add_argument(
        "--unencrypted",
        action="store_true",
        help="no end-to-end encryption (e.g. a public announcements room)",
    )
    p.set_defaults(func=commands.create_room)

    p = add("invite", "invite a user to a room")
    p.add_argument("room")
    p.add_argument("user")
    p.set_defaults(func=commands.invite)

    p = add("join", "join a room by id or alias")
    p.add_argument("room")
    p.add_argument("--via", action="append", default=[], metavar="SERVER")
    p.set_defaults(func=commands.join)

    p = add("leave", "leave a room")
    p.add_argument("room")
    p.set_defaults(func=commands.leave)

    p = add("send", "send a text message (TEXT, or standard input when TEXT is '-' or left out)")
    p.add_argument("room")
    p.add_argument("text", nargs="?", default="-")
    p.add_argument("--lines", action="store_true", help="with stdin: send each non-empty line as a message")
    p.add_argument("--notice", action="store_true", help="send as m.notice (for bots and alerts)")
    p.add_argument("--timeout", type=float, default=30.0, help="seconds to wait for delivery (default 30)")
    p.set_defaults(func=commands.send)

    p = add("tail", "follow new messages in a room")
    p.add_argument("room")
    p.add_argument("--count", type=int, help="exit after N messages")
    p.add_argument("--timeout", type=float, help="exit with code 2 if the messages do not come in S seconds")
    p.add_argument(
        "--translate",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="translate each message on this device (default: the room's 'translate --auto' setting)",
    )
    p.add_argument("--to", help="translate into LANG (default: room setting, locale, en)")
    p.set_defaults(func=commands.tail)

    p = add("history", "recent messages of a room")
    p.add_argument("room")
    p.add_argument("--limit", type=int, default=20)
    p.set_defaults(func=commands.history)

    p = add(
        "devices",
        "list your devices (or --user's, with their trust), revoke one: 'devices delete DEVICE', "
        "or cross-sign another of yours from a device holding your keys: 'devices sign DEVICE'",
    )
    p.add_argument("action", nargs="?", choices=["list", "delete", "sign"], default="list")
    p.add_argument("device", nargs="?")
    p.add_argument(
        "--user", help="list this user's devices, their trust and identity as your device's crypto knows them"
    )
    p.add_argument("--password-file", metavar="FILE")
    p.add_argument("--password-env", metavar="VAR")
    p.set_defaults(func=trust_commands.devices)
    trust_commands.register(sub, common)

    p = add("send-file", "send a file (encrypted on the device in an encrypted room)")
    p.add_argument("room")
    p.add_argument("path")
    p.add_argument("--timeout", type=float, default=60.0)
    p.set_defaults(func=commands.send_file)

    p = add("download", "save the file of a message (decrypted and hash-checked in an encrypted room)")
    p.add_argument("room")
    p.add_argument("event_id")
    p.add_argument("--out", required=True, help="where to write it")
    p.set_defaults(func=commands.download)

    p = add("outbox", "messages accepted but not yet delivered; 'outbox flush' delivers them")
    p.add_argument("action", nargs="?", choices=["list", "flush"], default="list")
    p.add_argument("--timeout", type=float, default=30.0)
    p.set_defaults(func=commands.outbox)

    p = add("search", "search your messages by meaning, on this device (any language)")
    p.add_argument("query")
    p.add_argument("--room", help="only this room")
    p.add_argument("--limit", type=int, default=10, help="how many results (default 10)")
    p.add_argument("--scan", type=int, default=2000, help="messages per room to index (default 2000)")
    p.set_defaults(func=ai_search.search)

    p = add("suggest", "suggest up to 3 replies to the latest message (on this device; nothing is sent)")
    p.add_argument("room")
    p.add_argument("--language", default="en", help="reply language when unsure (default en)")
    p.add_argument(
        "--llm",
        action="store_true",
        help="let the installed text-generation model write them (nimbus ai install MODEL.gguf)",
    )
    p.set_defaults(func=ai_commands.suggest)

    p = add("catchup", "summary, action items and mentions of your unread messages (on this device)")
    p.add_argument("room")
    p.add_argument("--limit", type=int, default=50, help="messages read when there is no read marker")
    p.add_argument(
        "--llm",
        action="store_true",
        help="let the installed text-generation model write the summary (nimbus ai install MODEL.gguf)",
    )
    p.set_defaults(func=ai_commands.catchup)

    p = add("translate", "translate a room's recent messages on this device, or preview a draft (--text)")
    p.add_argument("room", nargs="?", help="room id (omit with --text)")
    p.add_argument("--to", help="target language, ISO 639-1 (default: from the locale, else en)")
    p.add_argument("--from", dest="source", help="language of --text (default: detected)")
    p.add_argument("--limit", type=int, default=20, help="how many recent messages (default 20)")
    p.add_argument("--text", help="translate this draft and print it; nothing is sent")
    p.add_argument("--auto", choices=["on", "off"], help="ROOM: 'tail' translates new messages by itself")
    p.set_defaults(func=ai_translate.translate)

    ai = sub.add_parser("ai", help="on-device AI: what is installed")
    ai_sub = ai.add_subparsers(dest="ai_command", required=True, metavar="COMMAND")
    p = ai_sub.add_parser(
        "status", help="installed AI backends, sizes, the features they enable", parents=[common]
    )
    p.set_defaults(func=ai_search.status)
    ai_install.add_subcommands(ai_sub, common)  # ai install SOURCE, ai remove NAME

    p = add("demo", "start a two-server local federation and show two people talking across it")
    p.add_argument("--dir", help="where the demo keeps its servers and profiles (default ./.nimbus-demo)")
    p.add_argument("--exit", action="store_true", help="stop the servers when the exchange is done")
    p.set_defaults(func=demo.run)

    hs = sub.add_parser("homeserver", help="run local Synapse homeservers and federations (the kit)")
    homeserver_cli.add_subcommands(hs)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if getattr(args, "verbose", False) else logging.WARNING,
        format="%(asctime)s %(name)s %(levelname)s %(message)s",
        stream=sys.stderr,
    )
    if args.command == "homeserver":
        return int(args.func(args))
    printer = Printer(bool(args.json))
    try:
        return int(asyncio.run(args.func(args, printer)))
    except CliTimeout as exc:
        printer.error(str(exc), "timeout")
        return EXIT_TIMEOUT
    except NimbusError as exc:
        printer.error(str(exc), type(exc).__name__)
        return EXIT_ERROR
    except KeyboardInterrupt:
        printer.error("interrupted", "interrupted")
        return 130
    except OSError as exc:
        printer.error(f"{exc.strerror or exc} ({getattr(exc, 'filename', '') or ''})", "os-error")
        return EXIT_ERROR


if __name__ == "__main__":
    sys.exit(main())
