-- The running daemon (one row): the schedule it has in force, which `newsd status` shows (the files may hold a
-- refused edit). Written at start and at every applied reload, deleted at a clean stop. Times are unix ms.

CREATE TABLE daemon_state (
    id         INTEGER PRIMARY KEY CHECK (id = 1),
    pid        INTEGER NOT NULL,
    started_at INTEGER NOT NULL,
    applied_at INTEGER NOT NULL,               -- when the schedule below was put in force
    http_addr  TEXT,                           -- the address the HTTP endpoint is bound to, if any
    schedule   TEXT    NOT NULL                -- JSON: the jobs in force (disabled ones included)
);
