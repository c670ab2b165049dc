-- Embeddings: one vector per article and model version (f32 little-endian BLOB), and the model versions known.
-- The vectors are the source of truth for the FAISS index, which is rebuilt from them when its file is missing,
-- corrupt or stale. content_hash is the article's hash when embedded: a changed article is embedded again.

CREATE TABLE embeddings (
    article_id    INTEGER NOT NULL REFERENCES articles(id) ON DELETE CASCADE,
    model_version TEXT    NOT NULL,
    content_hash  TEXT    NOT NULL,
    dims          INTEGER NOT NULL,
    vector        BLOB    NOT NULL,
    created_at    INTEGER NOT NULL,
    PRIMARY KEY (article_id, model_version)
);
CREATE INDEX embeddings_version ON embeddings(model_version, article_id);

-- The model versions seen; exactly one is active (serves searches). A new version is embedded alongside the
-- active one and becomes active when every article has a vector for it.
CREATE TABLE embedding_models (
    version      TEXT    PRIMARY KEY,
    dims         INTEGER NOT NULL,
    model_dir    TEXT    NOT NULL,
    created_at   INTEGER NOT NULL,
    activated_at INTEGER,
    active       INTEGER NOT NULL DEFAULT 0
);
