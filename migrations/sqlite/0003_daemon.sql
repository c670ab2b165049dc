-- Daemon: job run history, schedule reload events, operations alerts. Times are unix milliseconds.

CREATE TABLE job_runs (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    job          TEXT    NOT NULL,                 -- job name from the schedule files
    task         TEXT    NOT NULL,                 -- crawl | embed | reembed | analyze | notify | prune | reindex
    fired_by     TEXT    NOT NULL,                 -- schedule | missed | queued
    scheduled_at INTEGER,                          -- the cron fire time this run belongs to
    started_at   INTEGER NOT NULL,
    finished_at  INTEGER,
    -- running (in progress, or the daemon was killed), ok, failed, timeout, panicked, skipped, interrupted
    outcome      TEXT    NOT NULL,
    counters     TEXT,                             -- JSON document the task returned
    error        TEXT
);
CREATE INDEX job_runs_job_started ON job_runs(job, started_at);
CREATE INDEX job_runs_running ON job_runs(outcome) WHERE outcome = 'running';

CREATE TABLE reload_events (
    id       INTEGER PRIMARY KEY AUTOINCREMENT,
    at       INTEGER NOT NULL,
    fired_by TEXT    NOT NULL,                     -- startup | watch | SIGHUP
    outcome  TEXT    NOT NULL,                     -- applied | refused
    detail   TEXT    NOT NULL                      -- the diff (applied) or the error (refused)
);

CREATE TABLE ops_alerts (
    id      INTEGER PRIMARY KEY AUTOINCREMENT,
    at      INTEGER NOT NULL,
    kind    TEXT    NOT NULL,
    message TEXT    NOT NULL
);
