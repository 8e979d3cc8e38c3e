-- nimbus store schema 3: on-device AI state (nimbus.ai): search index entries, caches.
-- Applied by store/migrate.py inside one transaction that also sets PRAGMA user_version = 3.
--
-- ai_objects: one row per (kind, item). kind is plain (a fixed vocabulary, below); item_key is
-- HMAC-SHA256 of (kind, item) under the store's index key (plain bytes only under a caller codec),
-- item_blob the codec-encoded item name (ai_list returns it) and value_blob the codec-encoded value.
-- Everything AI derives from messages (texts, embeddings) is plaintext-derived: it lives only in the
-- encoded blobs, never in a plain column.
--
-- Kinds in use:
--   search_entry   item = JSON [room_id, event_id]   one indexed message: header JSON + vector
--   search_meta    item = "model"                    which embedder produced the stored vectors
CREATE TABLE ai_objects (
    kind TEXT NOT NULL,
    item_key BLOB NOT NULL,
    item_blob BLOB NOT NULL,
    value_blob BLOB NOT NULL,
    PRIMARY KEY (kind, item_key)
) WITHOUT ROWID;
