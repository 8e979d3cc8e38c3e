"""Account: signed device keys uploaded once, OTK top-up, fallback keys, upload retried byte-for-byte."""

from __future__ import annotations

import pytest

from nimbus.crypto.canonical_json import CanonicalJsonError, canonical_json, verify_json
from nimbus.crypto.errors import StoreDataError
from nimbus.crypto.machine import OlmMachine, RequestKind
from nimbus.store.crypto_memory import MemoryCryptoStore

KEY = bytes(32)
ME, DEV = "@me:example.org", "DEV1"


def test_canonical_json() -> None:
    assert canonical_json({"b": 1, "a": {"d": "é", "c": [1, None, True]}}) == (
        '{"a":{"c":[1,null,true],"d":"é"},"b":1}'.encode()
    )
    with pytest.raises(CanonicalJsonError):
        canonical_json({"x": 1.5})
    with pytest.raises(CanonicalJsonError):
        canonical_json({"x": 2**60})


async def _upload(machine: OlmMachine) -> tuple[str, dict]:  # type: ignore[type-arg]
    [req] = [r for r in await machine.outgoing_requests() if r.kind == RequestKind.KEYS_UPLOAD]
    assert req.request.json is not None
    return req.request_id, req.request.json


async def test_device_keys_signed_and_uploaded_once() -> None:
    store = MemoryCryptoStore()
    m = await OlmMachine.load(store, ME, DEV, KEY)
    rid, body = await _upload(m)
    dk = body["device_keys"]
    assert dk["user_id"] == ME and dk["device_id"] == DEV
    assert dk["keys"][f"ed25519:{DEV}"] == m.identity_keys["ed25519"]
    verify_json(dk, ME, f"ed25519:{DEV}", m.identity_keys["ed25519"])  # raises if bad
    otks = body["one_time_keys"]
    assert len(otks) == 25 and all(k.startswith("signed_curve25519:") for k in otks)
    for obj in otks.values():
        verify_json(obj, ME, f"ed25519:{DEV}", m.identity_keys["ed25519"])
    [fb] = body["fallback_keys"].values()
    assert fb["fallback"] is True
    await m.mark_request_as_sent(rid, {"one_time_key_counts": {"signed_curve25519": 25}})
    assert [r for r in await m.outgoing_requests() if r.kind == RequestKind.KEYS_UPLOAD] == []
    # counts drop: top-up to max/2, without device keys this time
    await m.receive_sync_changes(
        to_device=[],
        changed=[],
        left=[],
        one_time_key_counts={"signed_curve25519": 20},
        unused_fallback_key_types=["signed_curve25519"],
        now_ms=1,
    )
    rid2, body2 = await _upload(m)
    assert rid2 != rid and "device_keys" not in body2 and "fallback_keys" not in body2
    assert len(body2["one_time_keys"]) == 5
    assert not set(body2["one_time_keys"]) & set(otks)


async def test_upload_retry_after_crash_sends_the_same_keys() -> None:
    store = MemoryCryptoStore()
    m = await OlmMachine.load(store, ME, DEV, KEY)
    await store.crypto_save(m.take_changes())  # keys saved BEFORE the upload leaves
    rid, body = await _upload(m)
    # crash before the answer: a new machine on the same store
    m2 = await OlmMachine.load(store, ME, DEV, KEY)
    rid2, body2 = await _upload(m2)
    assert (rid2, body2) == (rid, body)
    # uncommitted generation is lost with the machine, and never uploaded
    await m2.mark_request_as_sent(rid2, {"one_time_key_counts": {"signed_curve25519": 25}})
    await store.crypto_save(m2.take_changes())
    await m2.receive_sync_changes(
        to_device=[],
        changed=[],
        left=[],
        one_time_key_counts={"signed_curve25519": 0},
        unused_fallback_key_types=[],
        now_ms=1,
    )
    lost = m2.take_changes()  # not committed: dropped with the machine
    assert lost
    m3 = await OlmMachine.load(store, ME, DEV, KEY)
    assert [r for r in await m3.outgoing_requests() if r.kind == RequestKind.KEYS_UPLOAD] == []


async def test_fallback_key_generated_when_used_and_not_twice_while_pending() -> None:
    m = await OlmMachine.load(MemoryCryptoStore(), ME, DEV, KEY)
    rid, body = await _upload(m)
    await m.mark_request_as_sent(rid, {"one_time_key_counts": {"signed_curve25519": 25}})
    for _ in range(2):
        await m.receive_sync_changes(
            to_device=[],
            changed=[],
            left=[],
            one_time_key_counts={"signed_curve25519": 25},
            unused_fallback_key_types=[],
            now_ms=1,
        )
    rid2, body2 = await _upload(m)
    assert len(body2["fallback_keys"]) == 1
    assert body2["fallback_keys"] != body["fallback_keys"]
    assert "one_time_keys" not in body2
    # server that does not support fallback keys (None): nothing generated
    await m.mark_request_as_sent(rid2, {"one_time_key_counts": {"signed_curve25519": 25}})
    await m.receive_sync_changes(
        to_device=[],
        changed=[],
        left=[],
        one_time_key_counts={"signed_curve25519": 25},
        unused_fallback_key_types=None,
        now_ms=1,
    )
    assert [r for r in await m.outgoing_requests() if r.kind == RequestKind.KEYS_UPLOAD] == []


async def test_wrong_pickle_key_is_a_clear_error() -> None:
    store = MemoryCryptoStore()
    m = await OlmMachine.load(store, ME, DEV, KEY)
    await store.crypto_save(m.take_changes())
    with pytest.raises(StoreDataError):
        await OlmMachine.load(store, ME, DEV, b"\x01" * 32)
