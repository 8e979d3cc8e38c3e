"""Where passwords come from: a file, an environment variable, or a prompt. Never the command line
alone (it shows in `ps` and shell history), and never a built-in default."""

from __future__ import annotations

import getpass
import os
import sys
from pathlib import Path

from nimbus.types.errors import NimbusError


class NoPassword(NimbusError):
    """No password source was given and there is no terminal to prompt on."""


def read_password(file: str | None, env: str | None, prompt: str = "Password: ") -> str:
    if file is not None:
        text = Path(file).read_text(encoding="utf-8")
        password = text.rstrip("\r\n")
    elif env is not None:
        value = os.environ.get(env)
        if value is None:
            raise NoPassword(f"environment variable {env} is not set")
        password = value
    elif sys.stdin.isatty():
        password = getpass.getpass(prompt)
    else:
        raise NoPassword("no password given: use --password-file FILE, --password-env VAR, or a terminal")
    if not password:
        raise NoPassword("the password is empty")
    return password
