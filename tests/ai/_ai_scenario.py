"""Every AI feature of this layer, end to end, from a cold start (run as a script by test_privacy.py).

Loads the language-id and embedding models, identifies languages, builds a search index in an
encrypted SQLite store at argv[1], searches it, translates a message with the real Apertium
subprocess (cached in the same store), reopens it. Prints "ai-scenario ok" on success.
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

from nimbus.ai import registry
from nimbus.ai.search import SearchIndex
from nimbus.ai.translation import ApertiumTranslator, MessageTranslator
from nimbus.store import SqliteStore
from nimbus.store.encryption import KdfParams

KDF = KdfParams(memory_kib=8, iterations=1, lanes=1)


async def main(path: Path) -> None:
    ident = registry.language_identifier()
    guess = ident.identify("wo ist der Bahnhof, ich finde ihn nicht")
    assert guess is not None and guess.language == "de"
    assert ident.identify("ok") is None
    assert registry.features()["search"]
    store = await SqliteStore.open(path, passphrase="scenario passphrase", kdf=KDF)
    index = await SearchIndex.open(store, registry.embedder())
    await index.add("!r:x", "$1", "@a:x", 1, "the train to the airport leaves at nine")
    await index.add("!r:x", "$2", "@a:x", 2, "please bring a cake for the party")
    assert (await index.search("when does the airport rail depart", k=1))[0].message.event_id == "$1"
    assert ("es", "en") in ApertiumTranslator().pairs()  # discovered from the installed modes
    translated = await MessageTranslator(store).translate_message("$3", "Mañana vamos a la playa.", "en")
    assert translated.status == "translated" and translated.source == "es"
    assert translated.text is not None and "beach" in translated.text.lower()
    await store.close()
    store = await SqliteStore.open(path, passphrase="scenario passphrase", kdf=KDF)
    assert len(await SearchIndex.open(store, registry.embedder())) == 2
    again = await MessageTranslator(store).cached("$3", "en")
    assert again is not None and again.text == translated.text
    await store.close()
    print("ai-scenario ok")


if __name__ == "__main__":
    asyncio.run(main(Path(sys.argv[1])))
