-- Booleans are BIGINT 0/1 so that one query reads both backends (sqlx Any has no SQLite BOOLEAN).
-- Registered users and their logged-in devices.
CREATE TABLE users (
    id                 INTEGER PRIMARY KEY AUTOINCREMENT,
    number             TEXT    NOT NULL UNIQUE,
    display_name       TEXT    NOT NULL,
    password_hash      TEXT    NOT NULL,
    accepting_sessions BIGINT  NOT NULL DEFAULT 1,
    do_not_disturb     BIGINT  NOT NULL DEFAULT 0,
    created_at         BIGINT  NOT NULL
);

CREATE TABLE devices (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    user_id      BIGINT  NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    token_hash   TEXT    NOT NULL UNIQUE,
    name         TEXT,
    reported_ip  TEXT,
    observed_ip  TEXT    NOT NULL,
    created_at   BIGINT  NOT NULL,
    last_seen_at BIGINT  NOT NULL
);
CREATE INDEX devices_user ON devices(user_id);
