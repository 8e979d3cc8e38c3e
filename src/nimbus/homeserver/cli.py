"""`nimbus homeserver ...`: the command line of the homeserver kit.

Owns: argparse wiring only (the work is in server.py and lab.py). `add_subcommands(parser)` adds
`start|stop|status|create-user` and `lab up|down|status` to a parser; each sets `func=`, which takes
the parsed namespace and returns the exit code (0 success, 1 error with the message on stderr).
`--json` prints one JSON object per line. Runs alone as `python -m nimbus.homeserver.cli`.

Rules: never prints a secret unless asked (`create-user --show-token`); `lab up` returns once the
servers answer, leaving them running, unless `--foreground` (then Ctrl-C stops them).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from nimbus.homeserver.config import PROFILES
from nimbus.homeserver.errors import HomeserverError
from nimbus.homeserver.lab import Lab
from nimbus.homeserver.server import DEFAULT_START_TIMEOUT, Homeserver, ServerStatus

Handler = Callable[[argparse.Namespace], int]


def _data_home() -> Path:
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "nimbus"


def _emit(args: argparse.Namespace, obj: dict[str, Any], text: str) -> None:
    print(json.dumps(obj) if args.json else text, flush=True)


def _status_line(st: ServerStatus) -> str:
    state = f"running (pid {st.pid})" if st.running else "stopped"
    if st.running and not st.responding:
        state += ", not answering"
    return f"{st.server_name}  {st.client_url}  {state}  [{st.data_dir}]"


def _guard(fn: Handler) -> Handler:
    def run(args: argparse.Namespace) -> int:
        try:
            return fn(args)
        except HomeserverError as e:
            print(f"nimbus homeserver: error: {e}", file=sys.stderr, flush=True)
            return 1

    return run


# --- single server ----------------------------------------------------------------------------------
def _start(args: argparse.Namespace) -> int:
    hs = Homeserver.start(
        args.dir,
        profile=args.profile,
        database=args.database,
        port=args.port,
        server_name=args.server_name,
        timeout=args.timeout,
    )
    st = hs.status()
    _emit(args, st.to_json(), f"started {_status_line(st)}")
    return 0


def _stop(args: argparse.Namespace) -> int:
    hs = Homeserver.open(args.dir)
    was = hs.stop()
    _emit(
        args,
        {"server_name": hs.server_name, "stopped": was},
        f"stopped {hs.server_name}" if was else f"{hs.server_name} was not running",
    )
    return 0


def _status(args: argparse.Namespace) -> int:
    st = Homeserver.open(args.dir).status()
    _emit(args, st.to_json(), _status_line(st))
    return 0 if st.running else 3 if args.check else 0


def _create_user(args: argparse.Namespace) -> int:
    hs = Homeserver.open(args.dir)
    user = hs.create_user(args.localpart, args.password, admin=args.admin)
    obj: dict[str, Any] = {"user_id": user.user_id, "device_id": user.device_id}
    if args.password is None:
        obj["password"] = user.password  # generated: the caller has no other way to learn it
    if args.show_token:
        obj["access_token"] = user.access_token
    _emit(args, obj, "  ".join(f"{k}: {v}" for k, v in obj.items()))
    return 0


# --- lab ----------------------------------------------------------------------------------------------
def _lab_up(args: argparse.Namespace) -> int:
    lab = Lab.start(
        args.dir,
        servers=args.servers,
        profile=args.profile,
        database=args.database,
        no_federation=args.no_federation,
        allow=args.allow,
        timeout=args.timeout,
    )
    for st in lab.status():
        _emit(args, st.to_json(), _status_line(st))
    if not args.json:
        print(f"lab in {lab.path}: stop it with `nimbus homeserver lab down --dir {lab.path}`", flush=True)
    if args.foreground:
        signals = {signal.SIGINT, signal.SIGTERM}
        signal.pthread_sigmask(signal.SIG_BLOCK, signals)
        try:
            if not args.json:
                print("running in the foreground: Ctrl-C stops the servers", flush=True)
            signal.sigwait(signals)
        finally:
            lab.stop()
            signal.pthread_sigmask(signal.SIG_UNBLOCK, signals)
        if not args.json:
            print("lab stopped", flush=True)
    return 0


def _lab_down(args: argparse.Namespace) -> int:
    lab = Lab.open(args.dir)
    lab.stop()
    _emit(args, {"lab": str(lab.path), "stopped": True}, f"lab in {lab.path} stopped")
    return 0


def _lab_status(args: argparse.Namespace) -> int:
    lab = Lab.open(args.dir)
    statuses = lab.status()
    for st in statuses:
        _emit(args, st.to_json(), _status_line(st))
    return 0


# --- wiring -------------------------------------------------------------------------------------------
def _usage(parser: argparse.ArgumentParser) -> Handler:
    def show(_args: argparse.Namespace) -> int:
        parser.print_help(sys.stderr)
        return 1

    return show


def add_subcommands(parser: argparse.ArgumentParser) -> None:
    """Add the homeserver kit's subcommands to `parser` (e.g. `sub.add_parser("homeserver")`)."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--json", action="store_true", help="print one JSON object per line")
    server_dir = argparse.ArgumentParser(add_help=False)
    server_dir.add_argument(
        "--dir", type=Path, default=_data_home() / "homeserver", help="the server's data folder"
    )
    start_opts = argparse.ArgumentParser(add_help=False)
    start_opts.add_argument("--profile", choices=PROFILES, default="dev")
    start_opts.add_argument("--database", choices=("sqlite", "postgres"), default="sqlite")
    start_opts.add_argument("--timeout", type=float, default=DEFAULT_START_TIMEOUT, help="seconds")

    sub = parser.add_subparsers(dest="homeserver_command", metavar="COMMAND")
    parser.set_defaults(func=_usage(parser))

    p = sub.add_parser("start", parents=[common, server_dir, start_opts], help="start one server")
    p.add_argument("--port", type=int, default=None, help="client port (default: a free one)")
    p.add_argument("--server-name", default=None, help="default: localhost:<port>")
    p.set_defaults(func=_guard(_start))

    p = sub.add_parser("stop", parents=[common, server_dir], help="stop the server")
    p.set_defaults(func=_guard(_stop))

    p = sub.add_parser("status", parents=[common, server_dir], help="is the server running?")
    p.add_argument("--check", action="store_true", help="exit 3 when it is not running")
    p.set_defaults(func=_guard(_status))

    p = sub.add_parser("create-user", parents=[common, server_dir], help="register a user (admin API)")
    p.add_argument("localpart")
    p.add_argument("--password", default=None, help="default: a random one, printed")
    p.add_argument("--admin", action="store_true")
    p.add_argument("--show-token", action="store_true", help="also print the access token")
    p.set_defaults(func=_guard(_create_user))

    lab = sub.add_parser("lab", help="a local federation of servers")
    lab.set_defaults(func=_usage(lab))
    lab_sub = lab.add_subparsers(dest="lab_command", metavar="COMMAND")
    lab_dir = argparse.ArgumentParser(add_help=False)
    lab_dir.add_argument("--dir", type=Path, default=_data_home() / "lab", help="the lab's folder")

    p = lab_sub.add_parser("up", parents=[common, lab_dir, start_opts], help="start a lab")
    p.add_argument("--servers", type=int, default=2)
    p.add_argument("--no-federation", action="store_true", help="servers federate with nobody")
    p.add_argument(
        "--allow",
        nargs="+",
        default=None,
        metavar="NAME",
        help="allowed federation peers: server names or lab indices (default: the lab's servers)",
    )
    p.add_argument("--foreground", action="store_true", help="stay until Ctrl-C, then stop the lab")
    p.set_defaults(func=_guard(_lab_up))

    p = lab_sub.add_parser("down", parents=[common, lab_dir], help="stop a lab")
    p.set_defaults(func=_guard(_lab_down))

    p = lab_sub.add_parser("status", parents=[common, lab_dir], help="show a lab's servers")
    p.set_defaults(func=_guard(_lab_status))


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="nimbus homeserver", description="Run Synapse homeservers.")
    add_subcommands(parser)
    args = parser.parse_args(argv)
    code: int = args.func(args)
    return code


if __name__ == "__main__":
    sys.exit(main())
