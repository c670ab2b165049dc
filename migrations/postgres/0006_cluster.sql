-- Several daemons on one database act as one cluster (issue 14). Same tables as the SQLite schema; times are unix ms.

CREATE TABLE nodes (
    id            TEXT    PRIMARY KEY,
    host          TEXT    NOT NULL,
    pid           BIGINT  NOT NULL,
    version       TEXT    NOT NULL,
    started_at    BIGINT  NOT NULL,
    heartbeat_at  BIGINT  NOT NULL,
    stopped_at    BIGINT,
    applied_at    BIGINT,
    http_addr     TEXT,
    schedule      TEXT,
    index_seq     BIGINT  NOT NULL DEFAULT 0,
    index_lag     BIGINT  NOT NULL DEFAULT 0,
    index_vectors BIGINT  NOT NULL DEFAULT 0,
    leases        BIGINT  NOT NULL DEFAULT 0
);
DROP TABLE daemon_state;

CREATE TABLE fire_claims (
    job        TEXT   NOT NULL,
    fire_at    BIGINT NOT NULL,
    node       TEXT   NOT NULL,
    claimed_at BIGINT NOT NULL,
    PRIMARY KEY (job, fire_at)
);
CREATE INDEX fire_claims_claimed ON fire_claims(claimed_at);

ALTER TABLE job_runs ADD COLUMN node TEXT;

CREATE TABLE leases (
    kind       TEXT   NOT NULL,
    key        BIGINT NOT NULL,
    holder     TEXT   NOT NULL,
    node       TEXT   NOT NULL,
    expires_at BIGINT NOT NULL,
    PRIMARY KEY (kind, key)
);
CREATE INDEX leases_node ON leases(node);

CREATE TABLE host_slots (
    host         TEXT   PRIMARY KEY,
    next_at      BIGINT NOT NULL,
    paused_until BIGINT NOT NULL DEFAULT 0
);

-- The embeddings change sequence. A sequence alone hands out numbers in start order, not commit order, so a
-- follower reading "seq > n" could pass over a number committed late: every writer first takes a transaction-scoped
-- advisory lock (held to commit), which makes numbers visible strictly in order.
CREATE SEQUENCE embedding_seq;
ALTER TABLE embeddings ADD COLUMN seq BIGINT NOT NULL DEFAULT 0;
CREATE TABLE embedding_tombstones (
    seq           BIGINT PRIMARY KEY,
    article_id    BIGINT NOT NULL,
    model_version TEXT   NOT NULL,
    deleted_at    BIGINT NOT NULL
);
CREATE FUNCTION newsd_embedding_seq() RETURNS trigger AS $$
BEGIN
    PERFORM pg_advisory_xact_lock(7273700614);
    NEW.seq := nextval('embedding_seq');
    RETURN NEW;
END $$ LANGUAGE plpgsql;
CREATE FUNCTION newsd_embedding_tombstone() RETURNS trigger AS $$
BEGIN
    PERFORM pg_advisory_xact_lock(7273700614);
    INSERT INTO embedding_tombstones (seq, article_id, model_version, deleted_at)
    VALUES (nextval('embedding_seq'), OLD.article_id, OLD.model_version,
            (extract(epoch FROM clock_timestamp()) * 1000)::BIGINT);
    RETURN OLD;
END $$ LANGUAGE plpgsql;
UPDATE embeddings SET seq = nextval('embedding_seq');
CREATE TRIGGER embeddings_seq BEFORE INSERT OR UPDATE OF vector, content_hash ON embeddings
    FOR EACH ROW EXECUTE FUNCTION newsd_embedding_seq();
CREATE TRIGGER embeddings_tombstone AFTER DELETE ON embeddings
    FOR EACH ROW EXECUTE FUNCTION newsd_embedding_tombstone();
CREATE INDEX embeddings_seq_idx ON embeddings(model_version, seq);
CREATE INDEX embeddings_seq_all ON embeddings(seq);
