-- Daemon: job run history, schedule reload events, operations alerts. Same columns as SQLite; times are unix ms.

CREATE TABLE job_runs (
    id           BIGSERIAL PRIMARY KEY,
    job          TEXT    NOT NULL,
    task         TEXT    NOT NULL,
    fired_by     TEXT    NOT NULL,
    scheduled_at BIGINT,
    started_at   BIGINT  NOT NULL,
    finished_at  BIGINT,
    outcome      TEXT    NOT NULL,
    counters     TEXT,
    error        TEXT
);
CREATE INDEX job_runs_job_started ON job_runs(job, started_at);
CREATE INDEX job_runs_running ON job_runs(outcome) WHERE outcome = 'running';

CREATE TABLE reload_events (
    id       BIGSERIAL PRIMARY KEY,
    at       BIGINT  NOT NULL,
    fired_by TEXT    NOT NULL,
    outcome  TEXT    NOT NULL,
    detail   TEXT    NOT NULL
);

CREATE TABLE ops_alerts (
    id      BIGSERIAL PRIMARY KEY,
    at      BIGINT  NOT NULL,
    kind    TEXT    NOT NULL,
    message TEXT    NOT NULL
);
