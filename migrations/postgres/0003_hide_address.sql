-- Hide my address: every session of the user is relayed and no address is told to the peer.
ALTER TABLE users ADD COLUMN hide_address BIGINT NOT NULL DEFAULT 0;
