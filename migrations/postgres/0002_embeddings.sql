-- Embeddings: one vector per article and model version (f32 little-endian bytes), and the model versions known.
-- Same tables as the SQLite schema.

CREATE TABLE embeddings (
    article_id    BIGINT NOT NULL REFERENCES articles(id) ON DELETE CASCADE,
    model_version TEXT   NOT NULL,
    content_hash  TEXT   NOT NULL,
    dims          BIGINT NOT NULL,
    vector        BYTEA  NOT NULL,
    created_at    BIGINT NOT NULL,
    PRIMARY KEY (article_id, model_version)
);
CREATE INDEX embeddings_version ON embeddings(model_version, article_id);

CREATE TABLE embedding_models (
    version      TEXT   PRIMARY KEY,
    dims         BIGINT NOT NULL,
    model_dir    TEXT   NOT NULL,
    created_at   BIGINT NOT NULL,
    activated_at BIGINT,
    active       BIGINT NOT NULL DEFAULT 0
);
