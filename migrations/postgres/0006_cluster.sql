-- Multi-node servers (sidecall-server --nats): which node holds which device.
--
-- A node renews its own row in cluster_nodes every second; a presence row counts only while
-- its node's lease has not run out, so the rows of a node that died (kill -9) stop counting
-- within the lease without anyone deleting them one by one. Both tables are UNLOGGED: they
-- describe connections, which do not survive a database crash anyway, and unlogged writes
-- are several times cheaper.
CREATE UNLOGGED TABLE cluster_nodes (
    node_id     TEXT        PRIMARY KEY,
    started_at  TIMESTAMPTZ NOT NULL DEFAULT now(),
    expires_at  TIMESTAMPTZ NOT NULL
);

CREATE UNLOGGED TABLE presence (
    device_id   BIGINT  PRIMARY KEY,
    user_id     BIGINT  NOT NULL,
    number      TEXT    NOT NULL,
    node_id     TEXT    NOT NULL,
    conn_id     BIGINT  NOT NULL,
    reported_ip TEXT,
    observed_ip TEXT    NOT NULL
);
CREATE INDEX presence_number ON presence(number);
CREATE INDEX presence_node ON presence(node_id);
