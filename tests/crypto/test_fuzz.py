"""Property tests: random and mutated JSON into the decryption and device-key paths raises nothing
outside the documented hierarchy (CryptoError), and the machine keeps working afterwards."""

from __future__ import annotations

import asyncio
import copy
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from nimbus.api.errors import MalformedResponse
from nimbus.crypto.errors import CryptoError
from nimbus.crypto.machine import OlmMachine
from nimbus.types.events import parse_event
from tests.crypto.helpers import RawDevice, megolm_content
from tests.scenarios.harness import Device, FakeServer

ROOM = "!room:example.org"
ALICE, BOB = "@alice:example.org", "@bob:example.org"

json_leaf = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**60), 2**60),
    st.floats(allow_nan=False),
    st.text(max_size=30),
    st.sampled_from(["m.olm.v1.curve25519-aes-sha2", "m.megolm.v1.aes-sha2", ROOM, ALICE, "AwgA", 0, 1]),
)
json_value = st.recursive(
    json_leaf,
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=5)
    ),
    max_leaves=20,
)


class World:
    """One bob with a valid room key from a raw alice, plus valid samples to mutate."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.loop.run_until_complete(self._setup())

    async def _setup(self) -> None:
        self.server = FakeServer()
        self.bob = await Device.create(self.server, BOB, "B1")
        self.raw = RawDevice(self.server, ALICE, "A1")
        self.raw.publish()
        await self.bob.machine.update_tracked_users([ALICE])
        await self.bob.flush()
        self.group, key = self.raw.room_key(ROOM)
        self.olm_event = self.raw.olm_to(BOB, "B1", self.raw.payload(BOB, "B1", "m.room_key", key))
        await self._to_device([self.olm_event])
        self.megolm = megolm_content(
            self.group, {"type": "m.room.message", "content": {"b": 1}, "room_id": ROOM}
        )
        self.device_keys = self.raw.device_keys()

    @property
    def machine(self) -> OlmMachine:
        return self.bob.machine

    async def _to_device(self, events: list[Any]) -> Any:
        return await self.machine.receive_sync_changes(
            to_device=events,
            changed=[],
            left=[],
            one_time_key_counts={"signed_curve25519": 50},
            unused_fallback_key_types=["signed_curve25519"],
            now_ms=1,
        )

    def run(self, coro: Any) -> Any:
        return self.loop.run_until_complete(coro)


WORLD: World | None = None


def world() -> World:
    global WORLD
    if WORLD is None:
        WORLD = World()
    return WORLD


def mutate(value: Any, path: list[Any], new: Any) -> Any:
    out = copy.deepcopy(value)
    target = out
    for p in path[:-1]:
        target = target[p]
    if path:
        target[path[-1]] = new
    else:
        out = new
    return out


def paths(value: Any, prefix: list[Any] | None = None) -> list[list[Any]]:
    prefix = prefix or []
    out = [prefix]
    if isinstance(value, dict):
        for k, v in value.items():
            out += paths(v, [*prefix, k])
    elif isinstance(value, list):
        for i, v in enumerate(value):
            out += paths(v, [*prefix, i])
    return out


async def _decrypt(w: World, content: Any) -> None:
    try:
        event = parse_event(
            {
                "event_id": "$f",
                "type": "m.room.encrypted",
                "sender": ALICE,
                "origin_server_ts": 1,
                "content": content,
                "room_id": ROOM,
            },
            ROOM,
        )
    except Exception:
        return  # not an event at all: the sync loop never hands it over
    try:
        await w.machine.decrypt_room_event(event, now_ms=1)
    except CryptoError:
        pass


FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))


@FUZZ
@given(st.data(), json_value)
def test_mutated_megolm_events(data: st.DataObject, new: Any) -> None:
    w = world()
    path = data.draw(st.sampled_from(paths(w.megolm)))
    w.run(_decrypt(w, mutate(w.megolm, path, new) if path else new if isinstance(new, dict) else {}))


@FUZZ
@given(json_value)
def test_random_megolm_content(content: Any) -> None:
    w = world()
    w.run(_decrypt(w, content if isinstance(content, dict) else {"x": content}))


@FUZZ
@given(st.data(), json_value)
def test_mutated_and_random_to_device(data: st.DataObject, new: Any) -> None:
    w = world()
    path = data.draw(st.sampled_from(paths(w.olm_event)))
    events = [
        mutate(w.olm_event, path, new),
        new,
        {"type": "m.room_key.withheld", "sender": ALICE, "content": new},
    ]
    results = w.run(w._to_device(events))  # documented: never raises, every event gets a result
    assert len(results) == 3


@FUZZ
@given(st.data(), json_value)
def test_mutated_device_keys_never_accepted_unless_valid(data: st.DataObject, new: Any) -> None:
    w = world()
    path = data.draw(st.sampled_from(paths(w.device_keys)))
    keys = mutate(w.device_keys, path, new)
    body = {"device_keys": {ALICE: {"A1": keys, "A2": new}}}
    rid = f"q-{id(keys)}"

    async def go() -> None:
        m = w.machine
        m._tracker._in_flight[rid] = ({ALICE}, None)  # type: ignore[assignment]
        try:
            await m._tracker.receive_query(rid, body)
        except MalformedResponse:
            return
        devs = await m.devices(ALICE)
        assert set(devs) <= {"A1"}
        if "A1" in devs:
            assert devs["A1"].ed25519 == w.raw.ed and devs["A1"].curve25519 == w.raw.curve
        m.take_changes()

    w.run(go())


def test_machine_still_works_after_fuzzing() -> None:
    w = world()
    w.machine.take_changes()
    content = megolm_content(w.group, {"type": "m.room.message", "content": {"ok": True}, "room_id": ROOM})
    event = parse_event(
        {
            "event_id": "$final",
            "type": "m.room.encrypted",
            "sender": ALICE,
            "origin_server_ts": 9,
            "content": content,
            "room_id": ROOM,
        },
        ROOM,
    )
    assert w.run(w.machine.decrypt_room_event(event, now_ms=1)).content == {"ok": True}


class CrossSigned:
    """alice's cross-signing keys and her device keys signed by her self-signing key (to mutate)."""

    def __init__(self, w: World) -> None:
        from nimbus.crypto.identity.cross_signing import OwnKeys

        self.keys = OwnKeys.generate()
        self.public = self.keys.public_objects(ALICE)
        self.device = self.keys.self_signing.sign_json(w.raw.device_keys(), ALICE)

    def body(self) -> dict[str, Any]:
        return {
            "device_keys": {ALICE: {"A1": self.device}},
            "master_keys": {ALICE: self.public["master_key"]},
            "self_signing_keys": {ALICE: self.public["self_signing_key"]},
        }


CROSS: CrossSigned | None = None


@FUZZ
@given(st.data(), json_value)
def test_mutated_cross_signing_keys_never_make_another_identity(data: st.DataObject, new: Any) -> None:
    """A /keys/query answer with a mutated master or self-signing key (or device signature) never
    raises outside MalformedResponse, and the only identity ever stored is the genuine one."""
    from nimbus.api.keys import parse_query_keys

    global CROSS
    w = world()
    CROSS = CROSS or CrossSigned(w)
    genuine = CROSS.body()
    path = data.draw(st.sampled_from([p for p in paths(genuine) if p[:1] != ["device_keys"] or len(p) > 3]))
    body = mutate(genuine, path, new)

    async def go() -> None:
        m = w.machine
        try:
            parsed = parse_query_keys(body)
        except MalformedResponse:
            return
        await m._identities.receive_query(parsed)
        m.take_identity_changes()
        m.take_device_problems()
        ident = await m.user_identity(ALICE)
        if ident.master_key is not None:
            assert ident.master_key == CROSS.keys.master.public
            assert ident.self_signing_key == CROSS.keys.self_signing.public
        m.take_changes()

    w.run(go())
