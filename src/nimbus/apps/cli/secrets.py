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


PASSPHRASE_ENV = "NIMBUS_PASSPHRASE"


def read_passphrase(file: str | None, env: str | None, *, new: bool = False) -> str:
    """The store passphrase: --passphrase-file, --passphrase-env VAR, $NIMBUS_PASSPHRASE, or a prompt.

    It encrypts everything the profile keeps on disk (keys, messages, the access token). There is no
    default; a new one is asked twice at a prompt.
    """
    if file is None and env is None and os.environ.get(PASSPHRASE_ENV) is not None:
        env = PASSPHRASE_ENV
    if file is None and env is None and sys.stdin.isatty():
        passphrase = getpass.getpass("Passphrase for this profile's encrypted store: ")
        if new and getpass.getpass("Repeat the passphrase: ") != passphrase:
            raise NoPassword("the two passphrases differ")
    elif file is None and env is None:
        raise NoPassword(
            "no store passphrase given: use --passphrase-file FILE, --passphrase-env VAR, "
            f"${PASSPHRASE_ENV}, or a terminal"
        )
    else:
        passphrase = read_password(file, env)
    if not passphrase:
        raise NoPassword("the passphrase is empty")
    return passphrase
