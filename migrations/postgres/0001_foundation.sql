-- Foundation: sources (with fetch state) and articles. Same columns as the SQLite schema; times are unix ms.

CREATE TABLE sources (
    id                   BIGSERIAL PRIMARY KEY,
    name                 TEXT    NOT NULL UNIQUE,
    url                  TEXT    NOT NULL,
    etag                 TEXT,
    last_modified        TEXT,
    consecutive_failures BIGINT  NOT NULL DEFAULT 0,
    next_fetch_at        BIGINT  NOT NULL DEFAULT 0,
    last_fetch_at        BIGINT,
    last_success_at      BIGINT,
    last_error           TEXT,
    last_error_at        BIGINT,
    last_status          TEXT
);

CREATE TABLE articles (
    id            BIGSERIAL PRIMARY KEY,
    url           TEXT    NOT NULL UNIQUE,
    source_id     BIGINT  NOT NULL REFERENCES sources(id),
    title         TEXT    NOT NULL,
    body          TEXT    NOT NULL,
    published_at  BIGINT,
    fetched_at    BIGINT  NOT NULL,
    content_hash  TEXT    NOT NULL,
    language      TEXT,
    extraction    TEXT    NOT NULL,
    page_status   TEXT    NOT NULL DEFAULT 'none',
    page_attempts BIGINT  NOT NULL DEFAULT 0,
    page_error    TEXT,
    charset       TEXT
);
CREATE INDEX articles_published_at ON articles(published_at);
CREATE INDEX articles_content_hash ON articles(content_hash);
CREATE INDEX articles_source ON articles(source_id);
CREATE INDEX articles_page_pending ON articles(page_status) WHERE page_status = 'pending';
