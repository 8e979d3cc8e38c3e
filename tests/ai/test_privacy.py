"""No AI code path opens a network connection, nor even tries to (the optional LLM backend included).

1. In a network namespace with only loopback (`unshare --net`), a fresh Python process runs every
   feature of this layer from a cold start (_ai_scenario.py) with the network guard
   (tests/netguard/sitecustomize.py) recording every connect/sendto/sendmsg/getaddrinfo: it must
   succeed and the guard must have recorded nothing at all. Translation runs there too, with the real
   Apertium subprocess (a program, not Python: the namespace is what shows it reaches no network).
2. In this process, with socket creation, connections and name lookups replaced by functions that
   record the attempt and raise, the same features (models reloaded from cold) work and record nothing.
"""

from __future__ import annotations

import importlib
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from nimbus.ai import embeddings, registry
from nimbus.ai.search import SearchIndex
from nimbus.ai.translation import MessageTranslator
from nimbus.store import MemoryStore

from .conftest import FAST_KDF, PASSPHRASE

REPO = Path(__file__).resolve().parents[2]
SCENARIO = Path(__file__).with_name("_ai_scenario.py")


def test_loopback_only_namespace_and_no_attempt(tmp_path: Path) -> None:
    assert shutil.which("apertium") is not None, "the scenario translates: apt-get install apertium"
    unshare = shutil.which("unshare")
    assert unshare is not None, "unshare(1) is needed for the loopback-only namespace"
    log = tmp_path / "netguard.log"
    log.touch()
    env = {k: v for k, v in os.environ.items() if "proxy" not in k.lower()}
    env["PYTHONPATH"] = os.pathsep.join([str(REPO / "tests" / "netguard"), str(REPO / "src")])
    env["NIMBUS_NETGUARD_LOG"] = str(log)
    env["HOME"] = str(tmp_path)  # no cache of a previous run can help
    script = 'ip link set lo up && [ "$(ip -o link show | wc -l)" = 1 ] && exec "$0" "$@"'
    done = subprocess.run(
        [unshare, "--net", "sh", "-c", script, sys.executable, str(SCENARIO), str(tmp_path / "a.db")],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert "ai-scenario ok" in done.stdout
    assert log.read_text() == ""  # not one connect, send or lookup, not even to loopback


def test_guard_would_have_seen_an_attempt(tmp_path: Path) -> None:
    """The guard used above records a connection attempt (so its silence means something)."""
    log = tmp_path / "netguard.log"
    env = dict(os.environ, PYTHONPATH=str(REPO / "tests" / "netguard"), NIMBUS_NETGUARD_LOG=str(log))
    code = (
        "import socket\ntry:\n    socket.create_connection(('127.0.0.1', 9), timeout=1)\n"
        "except OSError:\n    pass"
    )
    subprocess.run([sys.executable, "-c", code], env=env, check=True, timeout=60)
    assert "socket.connect" in log.read_text()


def block_sockets(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Make every way to open a socket raise (and record the attempt); returns the attempts list."""
    attempts: list[str] = []

    def refuse(name: str) -> object:
        def blocked(*args: object, **kwargs: object) -> object:
            attempts.append(name)
            raise OSError(f"network access attempted by AI code: {name}")

        return blocked

    for name in ("socket", "create_connection", "getaddrinfo", "socketpair"):
        monkeypatch.setattr(socket, name, refuse(name))
    return attempts


async def test_socket_creation_blocked_in_process(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(embeddings, "_engines", {})  # load the model again, under the block
    attempts = block_sockets(monkeypatch)

    ident = registry.language_identifier()
    guess = ident.identify("est-ce que quelqu'un a vu mes clés ?")
    assert guess is not None and guess.language == "fr"
    store = MemoryStore(passphrase=PASSPHRASE, kdf=FAST_KDF)
    index = await SearchIndex.open(store, registry.embedder())
    assert not embeddings.model_loaded()  # lazily: on first use
    await index.add("!r:x", "$1", "@a:x", 1, "the plumber comes on Monday morning")
    assert embeddings.model_loaded()
    await index.add("!r:x", "$2", "@a:x", 2, "I booked the restaurant for eight")
    assert (await index.search("when is the repair person visiting", k=1))[0].message.event_id == "$1"
    if shutil.which("apertium") is not None:
        t = await MessageTranslator(store).translate_message("$3", "El gato come pescado.", "en")
        assert t.status == "translated" and t.source == "es" and t.text is not None
        assert "cat" in t.text.lower() and "fish" in t.text.lower()
    assert attempts == []


def test_neural_translation_with_sockets_blocked(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The CTranslate2 translator (a tiny model built here, installed from a folder) under the same block."""
    importlib.import_module("ctranslate2")  # installed by scripts/setup.sh --test: fail, never skip
    from nimbus.ai.models import install

    from ._tiny_models import tiny_marian

    attempts = block_sockets(monkeypatch)
    monkeypatch.setenv("NIMBUS_MODELS_DIR", str(tmp_path / "models"))
    install(tiny_marian(tmp_path / "opus-mt-en-de"))
    out = registry.translator_for("en", "de").translate("the cat sees the dog", "en", "de")
    assert out.strip() and attempts == []


_LLM_SCRIPT = """
import sys
from nimbus.ai import registry
from nimbus.ai.llm_features import abstractive_summary, llm_replies
from nimbus.ai.replies import ChatLine
gen = registry.text_generator()
assert gen.generate("are we meeting tomorrow?", max_tokens=8)
lines = [ChatLine("$1", "@a:x", 1, "are we meeting tomorrow at noon?")]
assert isinstance(llm_replies(gen, lines, "@me:x"), list)
assert isinstance(abstractive_summary(gen, lines), str)
print("llm ok")
"""


def test_llm_generation_in_a_loopback_only_namespace_and_with_sockets_blocked(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The llama.cpp backend (a tiny GGUF built here, installed as a user would) loads and generates
    in a loopback-only namespace with the guard recording nothing, and in this process with sockets
    blocked; the LLM reply and summary paths run too."""
    importlib.import_module("llama_cpp")  # installed by scripts/setup.sh --test: fail, never skip
    importlib.import_module("gguf")  # installed by scripts/setup.sh --test: fail, never skip
    from nimbus.ai.llm_features import abstractive_summary, llm_replies
    from nimbus.ai.models import install
    from nimbus.ai.replies import ChatLine

    from ._tiny_llama import tiny_llama_gguf

    models = tmp_path / "models"
    monkeypatch.setenv("NIMBUS_MODELS_DIR", str(models))
    install(tiny_llama_gguf(tmp_path / "tiny-llama.gguf", chat_template=True))

    unshare = shutil.which("unshare")
    assert unshare is not None, "unshare(1) is needed for the loopback-only namespace"
    log = tmp_path / "netguard.log"
    log.touch()
    env = {k: v for k, v in os.environ.items() if "proxy" not in k.lower()}
    env.update(
        PYTHONPATH=os.pathsep.join([str(REPO / "tests" / "netguard"), str(REPO / "src")]),
        NIMBUS_NETGUARD_LOG=str(log),
        NIMBUS_MODELS_DIR=str(models),
        HOME=str(tmp_path),
    )
    script = 'ip link set lo up && [ "$(ip -o link show | wc -l)" = 1 ] && exec "$0" "$@"'
    done = subprocess.run(
        [unshare, "--net", "sh", "-c", script, sys.executable, "-c", _LLM_SCRIPT],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    assert "llm ok" in done.stdout and log.read_text() == ""

    attempts = block_sockets(monkeypatch)
    gen = registry.text_generator()
    assert gen.generate("are we meeting tomorrow?", max_tokens=8)
    lines = [ChatLine("$1", "@a:x", 1, "are we meeting tomorrow at noon?")]
    assert llm_replies(gen, lines, "@me:x") == [] and abstractive_summary(gen, lines) == ""  # junk: fallback
    assert attempts == []
