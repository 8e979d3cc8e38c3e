"""Federation through nimbus clients against real Synapse servers of the homeserver kit.

What it shows: messages cross servers both ways exactly once; a server that was down catches up on
what it missed, in order; a closed federation refuses a server outside its allowed set with a clear
nimbus error; a room spread over three servers survives the loss of its creator's server.

Rules: every wait polls a condition against a deadline (helpers.py); every server a test starts is
stopped at the end (fixtures with try/finally). The tests that stop servers share one module-scoped
lab of four servers (0, 1, 2 federate with each other; 3 is outside server 0's allowed set) so the
module needs four Synapse starts, not eight; a function fixture restarts whatever an earlier test
left stopped. Spec: https://spec.matrix.org/v1.12/server-server-api/ (transactions, joins, invites,
backfill / get_missing_events), https://spec.matrix.org/v1.12/client-server-api/#syncing.
"""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from nimbus.api.errors import Forbidden
from nimbus.client.client import Client
from nimbus.homeserver import Lab, ServerSpec
from tests.integration.helpers import (
    logged_in,
    send_and_flush,
    wait_for_invite,
    wait_for_message,
    wait_until,
)

pytestmark = pytest.mark.integration

CATCH_UP_TIMEOUT = 90.0  # Synapse's own wake-up of a recovered destination runs at least once a minute
# The module lab: server 3 ("C") is outside server 0's ("A") allowed set; 0, 1, 2 all allow each other.
A, B, R2, C = 0, 1, 2, 3


@pytest.fixture(scope="module")
def fed_lab_module(tmp_path_factory: pytest.TempPathFactory, synapse_env: dict[str, str]) -> Iterator[Lab]:
    specs = [ServerSpec(allow=(A, B, R2)), ServerSpec(), ServerSpec(), ServerSpec()]
    lab = Lab.configure(tmp_path_factory.mktemp("fedlab") / "lab", specs, env=synapse_env)
    try:
        lab.start_all()
        yield lab
    finally:
        lab.stop()


@pytest.fixture
def fed_lab(fed_lab_module: Lab) -> Lab:
    """The module lab with every server running (an earlier test may have failed mid-outage)."""
    fed_lab_module.start_all()
    return fed_lab_module


class Clients:
    """Clients a test logs in; all closed at the end of the test."""

    def __init__(self, tmp_path: Path) -> None:
        self.tmp_path = tmp_path
        self.open: list[Client] = []

    async def on(self, lab: Lab, i: int, name: str) -> Client:
        client = await logged_in(lab.servers[i], self.tmp_path, name)
        self.open.append(client)
        return client


@pytest.fixture
async def clients(tmp_path: Path) -> AsyncIterator[Clients]:
    c = Clients(tmp_path)
    try:
        yield c
    finally:
        for client in c.open:
            await client.close()


def unique(label: str) -> str:
    return f"{label} {secrets.token_hex(4)}"


async def joined_room(creator: Client, members: list[Client]) -> str:
    """`creator` makes a room, invites every member across the federation; each joins."""
    room_id = await creator.create_room(name="federation test", invite=[m.user_id for m in members])
    for member in members:
        await wait_for_invite(member, room_id)
        await member.join(room_id)

    async def all_joined() -> bool:
        await creator.sync_once(0)
        room = await creator.room(room_id)
        return all(
            m.user_id in room.members and room.members[m.user_id].membership == "join" for m in members
        )

    await wait_until(all_joined, 30, f"the creator to see every member of {room_id} joined")
    return room_id


async def assert_once(client: Client, room_id: str, bodies: list[str], sender: str) -> None:
    """After one more sync, each body is in the client's timeline exactly once, from `sender`, in order."""
    await client.sync_once(0)
    room = await client.room(room_id, limit=500)
    positions = []
    for body in bodies:
        hits = [i for i, m in enumerate(room.timeline) if m.body == body]
        assert len(hits) == 1, f"{client.user_id} has {len(hits)} copies of one message, wanted 1"
        assert room.timeline[hits[0]].sender == sender
        positions.append(hits[0])
    assert positions == sorted(positions), f"messages out of order at {client.user_id}: {positions}"


# --- 1. both ways across two servers (the session lab, no server is stopped) -------------------------
async def test_messages_flow_both_ways_exactly_once(lab2: Lab, tmp_path: Path) -> None:
    alice = await logged_in(lab2.servers[0], tmp_path, "alice")
    bob = await logged_in(lab2.servers[1], tmp_path, "bob")
    try:
        assert alice.user_id.endswith(lab2.servers[0].server_name)
        assert bob.user_id.endswith(lab2.servers[1].server_name)
        room_id = await joined_room(alice, [bob])

        to_bob, to_alice = unique("alice to bob"), unique("bob to alice")
        a_event = await send_and_flush(alice, room_id, to_bob)
        got = await wait_for_message(bob, room_id, to_bob)
        assert (got.event_id, got.sender) == (a_event, alice.user_id)

        b_event = await send_and_flush(bob, room_id, to_alice)
        got = await wait_for_message(alice, room_id, to_alice)
        assert (got.event_id, got.sender) == (b_event, bob.user_id)

        # Exactly once on both sides: the sync'd timeline and the server-backed history agree.
        for client in (alice, bob):
            await assert_once(client, room_id, [to_bob], alice.user_id)
            await assert_once(client, room_id, [to_alice], bob.user_id)
            history = [m.body for m in await client.history(room_id, limit=50)]
            assert history.count(to_bob) == 1 and history.count(to_alice) == 1
    finally:
        await alice.close()
        await bob.close()


# --- 2. a server that was down catches up -----------------------------------------------------------
async def test_server_catches_up_after_outage(fed_lab: Lab, clients: Clients) -> None:
    alice = await clients.on(fed_lab, A, "alice")
    bob = await clients.on(fed_lab, B, "bob")
    room_id = await joined_room(alice, [bob])
    warm_up = unique("before the outage")
    await send_and_flush(alice, room_id, warm_up)
    await wait_for_message(bob, room_id, warm_up)

    await asyncio.to_thread(fed_lab.stop_server, B)
    assert not fed_lab.servers[B].is_running
    missed = [unique(f"while B was down #{n}") for n in range(3)]
    for body in missed:
        await send_and_flush(alice, room_id, body)  # accepted by A's server while B is away
    for body in missed:
        await wait_for_message(alice, room_id, body)

    await asyncio.to_thread(fed_lab.start_server, B)
    for body in missed:
        await wait_for_message(bob, room_id, body, timeout=CATCH_UP_TIMEOUT)
    await assert_once(bob, room_id, [warm_up, *missed], alice.user_id)


# --- 3. closed federation ------------------------------------------------------------------------------
async def test_closed_federation_refuses_server_outside_allowed_set(fed_lab: Lab, clients: Clients) -> None:
    alice = await clients.on(fed_lab, A, "alice")
    bob = await clients.on(fed_lab, B, "bob")
    carol = await clients.on(fed_lab, C, "carol")
    # A public room: only federation policy, not the join rules, can keep carol out.
    room_id = await alice.create_room(name="closed federation", preset="public_chat")

    with pytest.raises(Forbidden) as refused:
        await alice.invite(room_id, carol.user_id)
    assert refused.value.status == 403 and refused.value.errcode == "M_FORBIDDEN"

    with pytest.raises(Forbidden) as join_refused:  # C asks A for the join; A denies federation
        await carol.join(room_id, via=[fed_lab.servers[A].server_name])
    assert join_refused.value.status == 403 and join_refused.value.errcode == "M_FORBIDDEN"
    await carol.sync_once(0)
    assert room_id not in await carol.room_ids()

    # Control: the same room is open to a server in A's allowed set.
    await bob.join(room_id, via=[fed_lab.servers[A].server_name])

    async def bob_joined() -> bool:
        await bob.sync_once(0)
        return room_id in await bob.room_ids("join")

    await wait_until(bob_joined, 30, "bob's join of the public room to show in his sync")


# --- 4. a room outlives its creator's server -------------------------------------------------------------
async def test_room_survives_loss_of_creator_server(fed_lab: Lab, clients: Clients) -> None:
    alice = await clients.on(fed_lab, A, "alice")
    bob = await clients.on(fed_lab, B, "bob")
    dave = await clients.on(fed_lab, R2, "dave")
    room_id = await joined_room(alice, [bob, dave])
    hello = unique("hello from the creator")
    await send_and_flush(alice, room_id, hello)
    await wait_for_message(bob, room_id, hello)
    await wait_for_message(dave, room_id, hello)

    await asyncio.to_thread(fed_lab.stop_server, A)
    assert not fed_lab.servers[A].is_running
    b_to_d, d_to_b = unique("bob while A is down"), unique("dave while A is down")
    await send_and_flush(bob, room_id, b_to_d)
    got = await wait_for_message(dave, room_id, b_to_d, timeout=60)
    assert got.sender == bob.user_id
    await send_and_flush(dave, room_id, d_to_b)
    got = await wait_for_message(bob, room_id, d_to_b, timeout=60)
    assert got.sender == dave.user_id

    await asyncio.to_thread(fed_lab.start_server, A)
    for body in (b_to_d, d_to_b):
        await wait_for_message(alice, room_id, body, timeout=CATCH_UP_TIMEOUT)
    await assert_once(alice, room_id, [b_to_d], bob.user_id)
    await assert_once(alice, room_id, [d_to_b], dave.user_id)
