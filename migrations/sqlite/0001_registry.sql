-- Registered users and their logged-in devices.
CREATE TABLE users (
    id                 INTEGER PRIMARY KEY AUTOINCREMENT,
    number             TEXT    NOT NULL UNIQUE,
    display_name       TEXT    NOT NULL,
    password_hash      TEXT    NOT NULL,
    accepting_sessions BOOLEAN NOT NULL DEFAULT TRUE,
    do_not_disturb     BOOLEAN NOT NULL DEFAULT FALSE,
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
