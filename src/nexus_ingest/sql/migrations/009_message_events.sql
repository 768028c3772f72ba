-- What happened to a message besides being saved (saves are in prospect_extractions):
-- failed attempts, dead-lettering, being superseded. `nexus trace` reads it; maintenance prunes it.
CREATE TABLE IF NOT EXISTS nexus.message_events (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    msg_id      bigint NOT NULL,
    session_id  text,
    event       text NOT NULL,
    attempt     integer,
    detail      jsonb NOT NULL DEFAULT '{}',
    at          timestamptz NOT NULL DEFAULT clock_timestamp()
);
CREATE INDEX IF NOT EXISTS message_events_msg_idx ON nexus.message_events (msg_id);
CREATE INDEX IF NOT EXISTS message_events_session_idx ON nexus.message_events (session_id, at);
CREATE INDEX IF NOT EXISTS message_events_at_idx ON nexus.message_events (at);
