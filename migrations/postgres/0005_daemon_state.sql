-- The running daemon (one row): the schedule it has in force. Same columns as SQLite; times are unix ms.

CREATE TABLE daemon_state (
    id         BIGINT PRIMARY KEY CHECK (id = 1),
    pid        BIGINT NOT NULL,
    started_at BIGINT NOT NULL,
    applied_at BIGINT NOT NULL,
    http_addr  TEXT,
    schedule   TEXT   NOT NULL
);
