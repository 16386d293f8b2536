-- Numbers a user does not want to hear from: their requests answer "unavailable".
CREATE TABLE blocked (
    user_id BIGINT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    number  TEXT   NOT NULL,
    PRIMARY KEY (user_id, number)
);
