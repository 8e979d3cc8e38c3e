"""A loopback TCP relay between a nimbus process and its homeserver, for killing a client mid-request.

Owns: `HoldingRelay`, which forwards bytes both ways and reacts to the first client request whose
bytes contain `marker` (e.g. b"/send/m.room.encrypted/" or b"/keys/upload"):
- mode HOLD_ANSWER: the request is forwarded (the server acts on it), but from then on no answer goes
  back to the client on any connection (the answer is "lost");
- mode DROP_REQUEST: that request never reaches the server, nor does anything after it on that
  connection (the request is "lost" in flight; the client waits for an answer that never comes);
- mode WATCH: everything is forwarded; the relay only notes that the marker went by.
`seen` is set once the marker went by. Rules: listens on 127.0.0.1 only; daemon threads; `close()`
stops accepting (connections already open die with their peers, e.g. a SIGKILLed client).
"""

from __future__ import annotations

import contextlib
import socket
import threading

HOLD_ANSWER = "hold-answer"
DROP_REQUEST = "drop-request"
WATCH = "watch"


class HoldingRelay:
    def __init__(self, target_port: int, marker: bytes, mode: str = HOLD_ANSWER) -> None:
        if mode not in (HOLD_ANSWER, DROP_REQUEST, WATCH):
            raise ValueError(f"unknown relay mode {mode!r}")
        self.target_port = target_port
        self.marker = marker
        self.mode = mode
        self.seen = threading.Event()
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.closed = False
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while not self.closed:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection(("127.0.0.1", self.target_port))
            except OSError:
                client.close()
                continue
            threading.Thread(target=self._pump, args=(client, upstream, True), daemon=True).start()
            threading.Thread(target=self._pump, args=(upstream, client, False), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket, to_server: bool) -> None:
        blackholed = False  # DROP_REQUEST: this connection's request was swallowed
        try:
            while data := src.recv(65536):
                if to_server and self.marker in data:
                    if self.mode == DROP_REQUEST:
                        blackholed = True
                    self.seen.set()
                if blackholed:
                    continue  # swallow the request (and whatever follows it on this connection)
                if not to_server and self.mode == HOLD_ANSWER and self.seen.is_set():
                    continue  # swallow the answer
                dst.sendall(data)
        except OSError:
            pass
        finally:
            with contextlib.suppress(OSError):
                dst.shutdown(socket.SHUT_WR)

    def close(self) -> None:
        self.closed = True
        self.listener.close()
