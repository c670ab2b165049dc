-- Foundation: sources (with fetch state) and articles.
-- Times are unix milliseconds (INTEGER) so the same queries run on SQLite and PostgreSQL.

CREATE TABLE sources (
    id                   INTEGER PRIMARY KEY AUTOINCREMENT,
    name                 TEXT    NOT NULL UNIQUE,
    url                  TEXT    NOT NULL,
    etag                 TEXT,
    last_modified        TEXT,
    consecutive_failures INTEGER NOT NULL DEFAULT 0,
    next_fetch_at        INTEGER NOT NULL DEFAULT 0,
    last_fetch_at        INTEGER,
    last_success_at      INTEGER,
    last_error           TEXT,
    last_error_at        INTEGER,
    last_status          TEXT
);

CREATE TABLE articles (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    url           TEXT    NOT NULL UNIQUE,          -- canonical URL
    source_id     INTEGER NOT NULL REFERENCES sources(id),
    title         TEXT    NOT NULL,
    body          TEXT    NOT NULL,
    published_at  INTEGER,
    fetched_at    INTEGER NOT NULL,
    content_hash  TEXT    NOT NULL,
    language      TEXT,
    extraction    TEXT    NOT NULL,                 -- feed | selectors | general
    -- Full-text page state: none (feed text is final), pending (page still to fetch), ok, failed.
    page_status   TEXT    NOT NULL DEFAULT 'none',
    page_attempts INTEGER NOT NULL DEFAULT 0,
    page_error    TEXT,
    charset       TEXT
);
CREATE INDEX articles_published_at ON articles(published_at);
CREATE INDEX articles_content_hash ON articles(content_hash);
CREATE INDEX articles_source ON articles(source_id);
CREATE INDEX articles_page_pending ON articles(page_status) WHERE page_status = 'pending';
