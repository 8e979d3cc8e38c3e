"""How the CLI talks: readable lines for people, or one JSON object per line with --json.

Results go to stdout; progress and errors go to stderr, so `--json` output stays machine-readable.
Exit codes: 0 success, 1 error (message on stderr), 2 timeout.
"""

from __future__ import annotations

import json
import sys
from typing import Any, TextIO

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_TIMEOUT = 2


class CliTimeout(Exception):
    """What the command waited for did not happen in time (exit code 2)."""


class Printer:
    def __init__(self, as_json: bool, out: TextIO | None = None, err: TextIO | None = None) -> None:
        self.as_json = as_json
        self.out = out or sys.stdout
        self.err = err or sys.stderr

    def result(self, obj: dict[str, Any], text: str) -> None:
        """One result: `obj` as a JSON line with --json, else `text`."""
        if self.as_json:
            self.out.write(json.dumps(obj, ensure_ascii=False, sort_keys=True) + "\n")
        else:
            self.out.write(text + "\n")
        self.out.flush()

    def progress(self, text: str) -> None:
        """A note on a long operation, for people (stderr; in --json mode too, never on stdout)."""
        self.err.write(text + "\n")
        self.err.flush()

    def error(self, text: str, kind: str = "error") -> None:
        if self.as_json:
            self.err.write(json.dumps({"error": kind, "message": text}) + "\n")
        else:
            self.err.write(f"nimbus: {text}\n")
        self.err.flush()
