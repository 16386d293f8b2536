-- Multi-node servers run on PostgreSQL only (see migrations/postgres/0006_cluster.sql); a
-- single node on SQLite keeps who is online in memory. Kept so both backends count the same
-- migrations.
SELECT 1;
