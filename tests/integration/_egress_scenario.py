"""The "nothing leaves the machine" scenario, run by test_no_egress.py in a loopback-only namespace.

Run as `python -m tests.integration._egress_scenario WORKDIR` from the repository root, inside
`unshare --net` with tests/netguard on PYTHONPATH and NIMBUS_NETGUARD_LOG set (the test does this).
It starts a two-server lab (real Synapse, TLS federation on loopback) whose processes carry the same
guard, logs alice in on server 0 and bob on server 1, puts them in a room across the federation and
has them exchange a message each way through nimbus clients. It prints one JSON line on stdout:
{"client_pid", "server_pids", "interfaces", "received": {"bob": bool, "alice": bool}}.

Rules: pytest never collects it (no test_ prefix); every server it starts is stopped before it exits;
every wait has a deadline. Message bodies and passwords are never printed.
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import sys
from pathlib import Path
from typing import Any

from nimbus.client.client import Client
from nimbus.homeserver import Lab
from tests.integration.helpers import logged_in, send_and_flush, wait_for_invite, wait_for_message

NETGUARD_DIR = Path(__file__).resolve().parents[1] / "netguard"


async def exchange(lab: Lab, work: Path) -> dict[str, bool]:
    clients: list[Client] = []
    try:
        alice = await logged_in(lab.servers[0], work, "alice")
        clients.append(alice)
        bob = await logged_in(lab.servers[1], work, "bob")
        clients.append(bob)
        room_id = await alice.create_room(name="no egress", invite=[bob.user_id])
        await wait_for_invite(bob, room_id, timeout=60)
        await bob.join(room_id)
        to_bob = await send_and_flush(alice, room_id, "alice to bob, over loopback only")
        got_b = await wait_for_message(bob, room_id, "alice to bob, over loopback only", timeout=60)
        to_alice = await send_and_flush(bob, room_id, "bob to alice, over loopback only")
        got_a = await wait_for_message(alice, room_id, "bob to alice, over loopback only", timeout=60)
        return {"bob": got_b.event_id == to_bob, "alice": got_a.event_id == to_alice}
    finally:
        for client in clients:
            await client.close()


def main(work: Path) -> dict[str, Any]:
    interfaces = sorted(name for _, name in socket.if_nameindex())
    guard_log = os.environ.get("NIMBUS_NETGUARD_LOG")
    if not guard_log:
        raise SystemExit("NIMBUS_NETGUARD_LOG is not set: the scenario must run under the network guard")
    env = {"PYTHONPATH": str(NETGUARD_DIR), "NIMBUS_NETGUARD_LOG": guard_log}
    lab = Lab.start(work / "lab", 2, env=env)
    try:
        server_pids = [hs.pid for hs in lab.servers]
        received = asyncio.run(exchange(lab, work))
    finally:
        lab.stop()
    return {
        "client_pid": os.getpid(),
        "server_pids": server_pids,
        "interfaces": interfaces,
        "received": received,
    }


if __name__ == "__main__":
    print(json.dumps(main(Path(sys.argv[1]))), flush=True)
