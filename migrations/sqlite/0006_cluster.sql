-- Several daemons on one database act as one cluster (issue 14). On SQLite (one machine) the same tables make the
-- claims and leases trivially local. Times are unix ms.

-- Nodes: one row per daemon (a data directory), refreshed by its heartbeat. Replaces daemon_state (one row).
CREATE TABLE nodes (
    id            TEXT    PRIMARY KEY,             -- stable: <data_dir>/node-id, or cluster.node_id
    host          TEXT    NOT NULL,
    pid           INTEGER NOT NULL,
    version       TEXT    NOT NULL,                -- newsd's version
    started_at    INTEGER NOT NULL,
    heartbeat_at  INTEGER NOT NULL,
    stopped_at    INTEGER,                         -- set at a clean stop
    applied_at    INTEGER,                         -- when the schedule below was put in force
    http_addr     TEXT,
    schedule      TEXT,                            -- JSON: the jobs in force
    index_seq     INTEGER NOT NULL DEFAULT 0,      -- embeddings change sequence its index has applied
    index_lag     INTEGER NOT NULL DEFAULT 0,      -- changes in the database not yet in its index
    index_vectors INTEGER NOT NULL DEFAULT 0,
    leases        INTEGER NOT NULL DEFAULT 0       -- leases it holds
);
DROP TABLE daemon_state;

-- Each scheduled fire (job, fire time) runs on one node: the first to insert the row.
CREATE TABLE fire_claims (
    job        TEXT    NOT NULL,
    fire_at    INTEGER NOT NULL,
    node       TEXT    NOT NULL,
    claimed_at INTEGER NOT NULL,
    PRIMARY KEY (job, fire_at)
);
CREATE INDEX fire_claims_claimed ON fire_claims(claimed_at);

ALTER TABLE job_runs ADD COLUMN node TEXT;

-- Work leases: (kind, key) held by one process until `expires_at` (a killed holder's lease runs out).
CREATE TABLE leases (
    kind       TEXT    NOT NULL,                   -- source | embed:<model version>
    key        INTEGER NOT NULL,                   -- source id, article id
    holder     TEXT    NOT NULL,                   -- node id and process
    node       TEXT    NOT NULL,
    expires_at INTEGER NOT NULL,
    PRIMARY KEY (kind, key)
);
CREATE INDEX leases_node ON leases(node);

-- Per-host politeness shared by every node: when the next request may start, and Retry-After pauses.
CREATE TABLE host_slots (
    host         TEXT    PRIMARY KEY,              -- host:port
    next_at      INTEGER NOT NULL,
    paused_until INTEGER NOT NULL DEFAULT 0
);

-- The embeddings change sequence: every insert or update of a vector takes the next number, every deletion leaves
-- a tombstone with one, so index replicas follow the table incrementally (WHERE seq > what they applied).
CREATE TABLE embedding_seq (
    id    INTEGER PRIMARY KEY CHECK (id = 1),
    value INTEGER NOT NULL
);
INSERT INTO embedding_seq (id, value) VALUES (1, 0);
ALTER TABLE embeddings ADD COLUMN seq INTEGER NOT NULL DEFAULT 0;
CREATE TABLE embedding_tombstones (
    seq           INTEGER PRIMARY KEY,
    article_id    INTEGER NOT NULL,
    model_version TEXT    NOT NULL,
    deleted_at    INTEGER NOT NULL
);
-- Writers are serialised by SQLite itself, so numbers are taken in commit order.
CREATE TRIGGER embeddings_seq_insert AFTER INSERT ON embeddings BEGIN
    UPDATE embedding_seq SET value = value + 1 WHERE id = 1;
    UPDATE embeddings SET seq = (SELECT value FROM embedding_seq WHERE id = 1)
     WHERE article_id = NEW.article_id AND model_version = NEW.model_version;
END;
CREATE TRIGGER embeddings_seq_update AFTER UPDATE OF vector, content_hash ON embeddings BEGIN
    UPDATE embedding_seq SET value = value + 1 WHERE id = 1;
    UPDATE embeddings SET seq = (SELECT value FROM embedding_seq WHERE id = 1)
     WHERE article_id = NEW.article_id AND model_version = NEW.model_version;
END;
CREATE TRIGGER embeddings_tombstone AFTER DELETE ON embeddings BEGIN
    UPDATE embedding_seq SET value = value + 1 WHERE id = 1;
    INSERT INTO embedding_tombstones (seq, article_id, model_version, deleted_at)
    VALUES ((SELECT value FROM embedding_seq WHERE id = 1), OLD.article_id, OLD.model_version,
            CAST((julianday('now') - 2440587.5) * 86400000 AS INTEGER));
END;
-- Existing vectors get numbers in id order (one indexed pass: a correlated count would be quadratic).
UPDATE embeddings SET seq = numbered.n
  FROM (SELECT article_id AS aid, model_version AS mv, ROW_NUMBER() OVER (ORDER BY article_id, model_version) AS n
          FROM embeddings) AS numbered
 WHERE embeddings.article_id = numbered.aid AND embeddings.model_version = numbered.mv;
UPDATE embedding_seq SET value = (SELECT COUNT(*) FROM embeddings) WHERE id = 1;
CREATE INDEX embeddings_seq ON embeddings(model_version, seq);
CREATE INDEX embeddings_seq_all ON embeddings(seq);
