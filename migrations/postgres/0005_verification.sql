-- Numbers proven by their owners (a code by call, SMS or voice, or an administrator).
-- verified_at NULL: nothing proved that this user owns the number.
ALTER TABLE users ADD COLUMN verified_at BIGINT;

-- A device logged out because its number was claimed again: why, and when (other server
-- processes close its connection when they see it).
ALTER TABLE devices ADD COLUMN revoked TEXT;
ALTER TABLE devices ADD COLUMN revoked_at BIGINT;
CREATE INDEX devices_revoked_at ON devices(revoked_at);

-- Registrations waiting for their code (or for an administrator).
CREATE TABLE verifications (
    id            TEXT    PRIMARY KEY,
    number        TEXT    NOT NULL,
    display_name  TEXT    NOT NULL,
    password_hash TEXT    NOT NULL,
    -- SHA-256 of id ":" code; empty with the admin method.
    code_hash     TEXT    NOT NULL,
    method        TEXT    NOT NULL,
    attempts      BIGINT  NOT NULL DEFAULT 0,
    from_ip       TEXT    NOT NULL,
    created_at    BIGINT  NOT NULL,
    expires_at    BIGINT  NOT NULL,
    -- Set when it succeeded, was approved, or was replaced by another one's success.
    used_at       BIGINT,
    approved      BIGINT  NOT NULL DEFAULT 0
);
CREATE INDEX verifications_number ON verifications(number);
CREATE INDEX verifications_expires ON verifications(expires_at);
