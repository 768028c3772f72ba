-- A forgotten visitor leaves nothing behind: no message events (`nexus trace`), no session.
--
-- 1. `nexus forget` erased the events of the visitor's sessions, but the worker went on
--    recording new ones: for a snapshot whose visitor was forgotten while it was being
--    extracted (a failed attempt, a deferral), and for the snapshots the visitor sent after
--    being forgotten (superseded, retried, dead-lettered: dropped, yet traced). Those events
--    named a session nothing else held any more, so no later `nexus forget` found them.
-- 2. A read leases the session of every snapshot it takes, creating its row if need be, a
--    forgotten visitor's later snapshot too. Only a save dropped that row again: a snapshot
--    superseded or dead-lettered instead left the session, under the forgotten fingerprint.
--    Releasing a forgotten visitor's session now deletes it.
--
-- 1. An event is now kept only when its message still belongs to someone not forgotten. The worker
-- records events after settling their message, which may by then be deleted, so the visitor is
-- found through the session first: `nexus forget` deletes the visitor's sessions and a
-- forgotten visitor's snapshot is numbered in none, so a session row means a live visitor.
-- Without one, the message itself says whose it is (queued or archived); a message neither in
-- a session nor anywhere any more can only be a forgotten visitor's, or one sent by hand
-- straight to PGMQ and then superseded, whose event is then lost too. None of this is looked
-- at while nobody is forgotten. The lock is the one every save takes (012): an event either
-- commits before a forget, which then erases it, or is checked after it.
CREATE FUNCTION nexus.drop_events_of_forgotten()
RETURNS trigger
LANGUAGE plpgsql
SET search_path = ''
AS $$
DECLARE
    v_fingerprint text;
BEGIN
    LOCK TABLE nexus.forgotten IN ROW SHARE MODE;
    IF NEW.session_id IS NULL OR NOT EXISTS (SELECT 1 FROM nexus.forgotten) THEN
        RETURN NEW;
    END IF;
    SELECT s.fingerprint_id INTO v_fingerprint
    FROM nexus.sessions s WHERE s.session_id = NEW.session_id;
    IF FOUND THEN
        RETURN CASE WHEN EXISTS (
            SELECT 1 FROM nexus.forgotten f WHERE f.fingerprint_id = v_fingerprint) THEN NULL ELSE NEW END;
    END IF;
    SELECT m.fingerprint INTO v_fingerprint
    FROM (
        SELECT q.message ->> 'fingerprint' AS fingerprint
        FROM pgmq.q_nexus_prospect_ingestion q WHERE q.msg_id = NEW.msg_id
        UNION ALL
        SELECT a.message ->> 'fingerprint'
        FROM pgmq.a_nexus_prospect_ingestion a WHERE a.msg_id = NEW.msg_id
    ) m
    LIMIT 1;
    IF NOT FOUND
       OR EXISTS (SELECT 1 FROM nexus.forgotten f WHERE f.fingerprint_id = v_fingerprint) THEN
        RETURN NULL;
    END IF;
    RETURN NEW;
END;
$$;
REVOKE ALL ON FUNCTION nexus.drop_events_of_forgotten() FROM PUBLIC;

CREATE TRIGGER drop_events_of_forgotten
    BEFORE INSERT ON nexus.message_events
    FOR EACH ROW EXECUTE FUNCTION nexus.drop_events_of_forgotten();

-- 2. As in 006, deleting instead of releasing the sessions of forgotten visitors.
CREATE OR REPLACE FUNCTION nexus.release_sessions(p_session_ids text[], p_token uuid)
RETURNS void
LANGUAGE sql
SET search_path = ''
AS $$
    DELETE FROM nexus.sessions s
    USING nexus.forgotten f
    WHERE s.session_id = ANY(p_session_ids) AND s.lease_token = p_token
      AND f.fingerprint_id = s.fingerprint_id;
    UPDATE nexus.sessions
    SET leased_until = NULL, lease_token = NULL
    WHERE session_id = ANY(p_session_ids) AND lease_token = p_token;
$$;
