-- nimbus store schema 1: session, sync token, rooms, current state, timeline with gaps,
-- invite state, account data, outbox.
-- Columns named *_blob hold codec-encoded values (secrets or message content); see store/codec.py.
-- Applied by store/migrate.py inside one transaction that also sets PRAGMA user_version = 1.

CREATE TABLE session (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    homeserver TEXT NOT NULL,
    user_id TEXT NOT NULL,
    device_id TEXT NOT NULL,
    access_token_blob BLOB NOT NULL
);

CREATE TABLE sync_token (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    next_batch TEXT NOT NULL
);

CREATE TABLE rooms (
    room_id TEXT PRIMARY KEY,
    membership TEXT NOT NULL
);

CREATE TABLE current_state (
    room_id TEXT NOT NULL,
    type TEXT NOT NULL,
    state_key TEXT NOT NULL,
    event_id TEXT NOT NULL,
    event_blob BLOB NOT NULL,
    PRIMARY KEY (room_id, type, state_key)
);

-- pos ascends chronologically; back-filled events get positions below the ones they precede.
CREATE TABLE timeline (
    room_id TEXT NOT NULL,
    pos INTEGER NOT NULL,
    event_id TEXT NOT NULL,
    event_blob BLOB NOT NULL,
    PRIMARY KEY (room_id, pos),
    UNIQUE (room_id, event_id)
);

-- A gap at pos: the events just before pos are missing; token is the /messages `from` to get them.
CREATE TABLE timeline_gaps (
    room_id TEXT NOT NULL,
    pos INTEGER NOT NULL,
    token TEXT NOT NULL,
    PRIMARY KEY (room_id, pos)
);

CREATE TABLE invite_state (
    room_id TEXT NOT NULL,
    type TEXT NOT NULL,
    state_key TEXT NOT NULL,
    event_blob BLOB NOT NULL,
    PRIMARY KEY (room_id, type, state_key)
);

-- room_id '' holds global account data.
CREATE TABLE account_data (
    room_id TEXT NOT NULL,
    type TEXT NOT NULL,
    content_blob BLOB NOT NULL,
    PRIMARY KEY (room_id, type)
);

CREATE TABLE outbox (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    txn_id TEXT NOT NULL UNIQUE,
    room_id TEXT NOT NULL,
    event_type TEXT NOT NULL,
    content_blob BLOB NOT NULL,
    state TEXT NOT NULL CHECK (state IN ('pending', 'sent', 'failed')),
    event_id TEXT,
    created_ts INTEGER NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    last_error TEXT
);

CREATE INDEX outbox_by_state ON outbox (state, created_ts, seq);
