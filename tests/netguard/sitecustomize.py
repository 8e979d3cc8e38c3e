"""Network guard for tests: record every outbound socket destination of this Python process.

Put this directory on PYTHONPATH and set NIMBUS_NETGUARD_LOG=<file>: Python imports `sitecustomize`
at start-up and this module installs an audit hook (PEP 578, `sys.addaudithook`) that appends one JSON
line per event to that file:
    {"pid": ..., "event": "socket.connect" | "socket.sendto" | "socket.sendmsg" | "socket.getaddrinfo",
     "family": "AF_INET" | "AF_INET6" | "AF_UNIX" | ... | null, "host": ..., "port": ...}
`socket.connect` is raised by both connect() and connect_ex() (asyncio and Twisted use them).

Rules: without NIMBUS_NETGUARD_LOG nothing is installed; the hook never raises (an exception in an
audit hook would fail the audited call), never blocks, and records destinations only (no payloads).
Each record is one O_APPEND write, so many processes can share the file. This directory is not a test
package: pytest never collects it (no test_*.py here).
"""

from __future__ import annotations

import json
import os
import socket
import sys
from typing import Any

_EVENTS = frozenset({"socket.connect", "socket.sendto", "socket.sendmsg", "socket.getaddrinfo"})


def _text(value: Any) -> Any:
    if isinstance(value, bytes):
        return value.decode("utf-8", "backslashreplace")
    if value is None or isinstance(value, (str, int)):
        return value
    return repr(value)


def _family_name(sock: Any) -> str | None:
    try:
        return socket.AddressFamily(sock.family).name
    except (AttributeError, ValueError, TypeError):
        return None


def _record(event: str, args: tuple[Any, ...]) -> dict[str, Any]:
    if event == "socket.getaddrinfo":  # args: (host, port, family, type, proto)
        return {"family": None, "host": _text(args[0]), "port": _text(args[1])}
    sock, address = args[0], args[1]  # connect: (sock, address); sendto/sendmsg: (sock, address)
    family = _family_name(sock)
    if isinstance(address, tuple) and len(address) >= 2:
        return {"family": family, "host": _text(address[0]), "port": _text(address[1])}
    return {"family": family, "host": _text(address), "port": None}  # AF_UNIX path, or None


def _install(log_path: str) -> None:
    def hook(event: str, args: tuple[Any, ...]) -> None:
        if event not in _EVENTS:
            return
        try:
            line = json.dumps({"pid": os.getpid(), "event": event, **_record(event, args)}) + "\n"
            fd = os.open(log_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
            try:
                os.write(fd, line.encode())
            finally:
                os.close(fd)
        except Exception:  # an audit hook must never break the audited call
            pass

    sys.addaudithook(hook)


_LOG = os.environ.get("NIMBUS_NETGUARD_LOG")
if _LOG:
    _install(_LOG)
