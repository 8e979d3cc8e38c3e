-- nimbus store schema 2: encryption-at-rest metadata, crypto objects, decrypted-event cache.
-- Applied by store/migrate.py inside one transaction that also sets PRAGMA user_version = 2.
--
-- meta: how values are encoded. Rows (name -> value):
--   codec     'aead-chacha20poly1305-v1' (store/encryption.py) or 'caller' (a codec the caller
--             passed, e.g. PlainCodec in tests: NOT encryption)
--   kdf       JSON {"alg": "argon2id", "memory_kib", "iterations", "lanes"}   (aead only)
--   salt      16 random bytes                                                  (aead only)
--   verifier  the AEAD encryption of a known value: a wrong passphrase fails it (aead only)
-- Written once, when the database is first opened; never holds a key or the passphrase.
CREATE TABLE meta (
    name TEXT PRIMARY KEY,
    value BLOB NOT NULL
);

-- crypto_objects: the crypto machine's state (nimbus/crypto/store.py, CryptoStore), one row per
-- (kind, group, item). kind is plain (a fixed vocabulary, below); grp_key and item_key are
-- HMAC-SHA256 under the store's index key (plain bytes only under a caller codec), item_blob is the
-- codec-encoded item name (crypto_list returns it) and value_blob the codec-encoded value.
--
-- Kinds in use by this issue (see crypto/store.py): account, olm_session, inbound_group_session,
-- outbound_group_session, device, replay, outgoing, withheld.
-- Kinds reserved for the next issues (cross-signing and key sharing), no schema change needed:
--   cross_signing_identity   group = user_id, item = ""            a user's master/self/user-signing keys
--   cross_signing_private    group = "",      item = "master"|"self_signing"|"user_signing"
--   trust                    group = user_id, item = device_id or "" (the identity): verified/pinned state
--   session_backup           group = room_id, item = session_id     backed-up flag + backup version
--   session_provenance       group = room_id, item = session_id     forwarding chain (curve25519 keys) and
--                                                                  authenticity (own/verified/forwarded/backup)
--   backup_key               group = "",      item = version        the backup decryption key
--   secret                   group = "",      item = secret name    SSSS secrets received by gossip
--   key_request              group = "",      item = request_id     outgoing m.room_key_request state
CREATE TABLE crypto_objects (
    kind TEXT NOT NULL,
    grp_key BLOB NOT NULL,
    item_key BLOB NOT NULL,
    item_blob BLOB NOT NULL,
    value_blob BLOB NOT NULL,
    PRIMARY KEY (kind, grp_key, item_key)
) WITHOUT ROWID;

-- decrypted_events: locally cached plaintexts of encrypted events (the decrypted payload JSON,
-- codec-encoded). Ids stay plain, like the timeline's.
CREATE TABLE decrypted_events (
    room_id TEXT NOT NULL,
    event_id TEXT NOT NULL,
    event_blob BLOB NOT NULL,
    PRIMARY KEY (room_id, event_id)
);
