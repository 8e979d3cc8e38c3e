"""Live translation through the CLI against real Synapse: `nimbus tail ROOM --translate` prints each new
message of an encrypted room with its on-device (Apertium) translation; `nimbus translate ROOM --auto on`
makes plain `tail` do it; `nimbus ai status` lists the installed language pairs."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest

from nimbus.homeserver import Homeserver
from tests.integration.cli import NewUser, command, env_with, nimbus, two_in_a_room

pytestmark = [pytest.mark.integration]  # Apertium is installed by scripts/setup.sh: never skipped


def _tail_while(profile: Path, args: list[str], send: list[tuple[Path, str, str]]) -> list[dict[str, Any]]:
    """Start `nimbus tail`, wait for its "following" line, send `send` (profile, room, text), and
    return what tail printed (one JSON object per message)."""
    tail = subprocess.Popen(
        command(profile, "tail", *args, "--timeout", "90", "--json"),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        text=True,
        env=env_with(LANG="C.UTF-8", LC_ALL="", LC_MESSAGES=""),
    )
    try:
        assert tail.stderr is not None
        line = tail.stderr.readline()  # it has caught up and is waiting
        assert "following" in line, line
        for sender, room, text in send:
            assert nimbus(sender, "send", room, text).code == 0
        out, err = tail.communicate(timeout=120)
    finally:
        if tail.poll() is None:
            tail.kill()
            tail.wait()
    assert tail.returncode == 0, err
    return [json.loads(x) for x in out.splitlines() if x.strip()]


def test_tail_translates_new_messages_and_the_auto_setting(
    homeserver: Homeserver, new_user: NewUser, tmp_path: Path
) -> None:
    alice, _alice_id, bob, _bob_id, room = two_in_a_room(homeserver, new_user, tmp_path)

    spanish = "¿Podemos hablar mañana por la tarde sobre el proyecto?"
    got = _tail_while(bob, [room, "--translate", "--to", "en", "--count", "1"], [(alice, room, spanish)])
    assert len(got) == 1
    msg = got[0]
    assert msg["encrypted"] and msg["decrypted"] and msg["body"] == spanish
    assert msg["translation_status"] == "translated" and msg["translation_source"] == "es"
    assert "tomorrow" in msg["translation"].lower()

    plain = _tail_while(bob, [room, "--count", "1"], [(alice, room, "El gato come pescado.")])
    assert plain[0]["body"] == "El gato come pescado." and "translation" not in plain[0]

    on = nimbus(bob, "translate", room, "--auto", "on", "--to", "en", "--json")
    assert on.code == 0, on.stderr
    assert on.objects[0] == {"type": "auto_translate", "room_id": room, "auto": True, "target": "en"}
    auto = _tail_while(
        bob,
        [room, "--count", "2"],
        [(alice, room, "La reunión es mañana."), (alice, room, "OK, see you then")],
    )
    assert [o["translation_status"] for o in auto] == ["translated", "same-language"]
    assert "meeting" in auto[0]["translation"].lower() and auto[1]["translation"] is None
    forced_off = _tail_while(bob, [room, "--no-translate", "--count", "1"], [(alice, room, "Hola")])
    assert "translation" not in forced_off[0]  # the flag overrides the room's setting

    off = nimbus(bob, "translate", room, "--auto", "off", "--json")
    assert off.code == 0 and off.objects[0]["auto"] is False
    after = _tail_while(bob, [room, "--count", "1"], [(alice, room, "Hasta luego")])
    assert "translation" not in after[0]

    translated = msg["translation"].encode()
    for file in bob.iterdir():  # the cached translation is encrypted at rest with the store
        if file.is_file():
            assert translated not in file.read_bytes(), file.name


def test_ai_status_lists_the_translation_pairs(tmp_path: Path) -> None:
    status = nimbus(tmp_path / "none", "ai", "status", "--json")
    assert status.code == 0, status.stderr
    engine = next(o for o in status.objects if o["type"] == "translation_engine")
    assert engine["name"] == "apertium" and engine["installed"]
    pairs = {(p["source"], p["target"]): p for p in engine["pairs"]}
    assert pairs[("es", "en")]["package"] == "apertium-eng-spa"
    assert ("en", "es") in pairs
    assert "apt-get install apertium-" in engine["hint"]
