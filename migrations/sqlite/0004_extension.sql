-- Click-to-call: the user's own phone on the server's PBX (e.g. 201).
ALTER TABLE users ADD COLUMN extension TEXT;
