-- Analyses and the notification outbox (issue 5).
-- An analysis row and its notification rows are written in ONE transaction (transactional outbox); the dispatcher
-- delivers pending rows, marks them delivered, retries with backoff and dead-letters after N attempts.

CREATE TABLE analyses (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    profile       TEXT    NOT NULL,
    created_at    INTEGER NOT NULL,              -- wall clock, unix ms
    as_of         INTEGER NOT NULL,              -- the analysis' "now" (injectable for replays and tests)
    window_from   INTEGER NOT NULL,
    window_to     INTEGER NOT NULL,
    mode          TEXT    NOT NULL,              -- llm | builtin
    model         TEXT,                          -- LLM model, or the embedder's model version in builtin mode
    template      TEXT    NOT NULL,
    template_hash TEXT    NOT NULL,              -- sha256 of the template source
    prompt        TEXT,                          -- rendered prompt (when an LLM was asked)
    llm_error     TEXT,                          -- why the LLM answer was not used (fallback), if it was not
    doc           TEXT    NOT NULL,              -- the structured analysis (JSON), both modes fill the same shape
    text          TEXT    NOT NULL,              -- rendered message text
    article_ids   TEXT    NOT NULL,              -- JSON array of every article id the analysis drew on
    stories       INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX analyses_profile ON analyses(profile, id);

CREATE TABLE notifications (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    analysis_id     INTEGER REFERENCES analyses(id),
    category        TEXT    NOT NULL,            -- analysis | ops
    target          TEXT    NOT NULL,            -- target name in the config
    kind            TEXT    NOT NULL,            -- slack | discord | webhook
    part            INTEGER NOT NULL DEFAULT 1,  -- (i/N) when a message is split
    parts           INTEGER NOT NULL DEFAULT 1,
    idempotency_key TEXT    NOT NULL UNIQUE,     -- stable across re-sends
    payload         TEXT    NOT NULL,            -- the exact JSON body sent (rendered once, at enqueue)
    status          TEXT    NOT NULL DEFAULT 'pending', -- pending | delivered | dead
    attempts        INTEGER NOT NULL DEFAULT 0,
    next_attempt_at INTEGER NOT NULL,            -- also the claim lease while a send is in flight
    last_error      TEXT,
    last_status     INTEGER,                     -- last HTTP status seen
    created_at      INTEGER NOT NULL,
    delivered_at    INTEGER
);
CREATE INDEX notifications_due ON notifications(status, next_attempt_at);
