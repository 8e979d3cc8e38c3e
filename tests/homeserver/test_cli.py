"""Unit tests of the CLI wiring (parsing only; running servers is an integration test)."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from nimbus.homeserver.cli import add_subcommands, main


def parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="nimbus")
    sub = parser.add_subparsers()
    add_subcommands(sub.add_parser("homeserver"))
    return parser.parse_args(["homeserver", *argv])


def test_lab_up_options() -> None:
    args = parse("lab", "up", "--servers", "3", "--dir", "/x", "--allow", "0", "localhost:9", "--json")
    assert (args.servers, args.dir, args.allow, args.json) == (3, Path("/x"), ["0", "localhost:9"], True)
    assert args.no_federation is False and args.foreground is False
    assert args.database == "sqlite" and args.profile == "dev"
    assert callable(args.func)


def test_start_options() -> None:
    args = parse("start", "--profile", "secure", "--database", "postgres", "--port", "8010")
    assert (args.profile, args.database, args.port) == ("secure", "postgres", 8010)
    with pytest.raises(SystemExit):
        parse("start", "--profile", "bogus")


def test_errors_exit_1_with_message_on_stderr(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["lab", "status", "--dir", str(tmp_path)]) == 1
    assert "no lab in" in capsys.readouterr().err
    assert main(["status", "--dir", str(tmp_path)]) == 1
    assert "no server is configured" in capsys.readouterr().err


def test_no_subcommand_prints_usage_and_fails(capsys: pytest.CaptureFixture[str]) -> None:
    assert main([]) == 1
    assert "usage" in capsys.readouterr().err
    assert main(["lab"]) == 1
