-- The table sales people act on: one row per visitor (fingerprint), merged from every
-- extraction, plus the history of every extraction that produced it.

CREATE TABLE IF NOT EXISTS public.prospect_data (
    id                 bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    fingerprint_id     text NOT NULL UNIQUE,
    session_id         text,
    nombre             text,
    email              text,
    telefono           text,
    empresa            text,
    cargo              text,
    ubicacion          text,
    productos_interes  text[] NOT NULL DEFAULT '{}',
    presupuesto        text,
    plazo              text,
    nivel_interes      smallint CHECK (nivel_interes BETWEEN 1 AND 10),
    intencion          text CHECK (intencion IN ('compra', 'informacion', 'soporte', 'queja', 'otro')),
    idioma             text,
    resumen            text,
    last_msg_id        bigint,
    extraction_count   integer NOT NULL DEFAULT 0,
    created_at         timestamptz NOT NULL DEFAULT now(),
    updated_at         timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS prospect_data_updated_idx ON public.prospect_data (updated_at DESC);
CREATE INDEX IF NOT EXISTS prospect_data_interest_idx ON public.prospect_data (nivel_interes DESC NULLS LAST);

CREATE TABLE IF NOT EXISTS public.prospect_extractions (
    id              bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    msg_id          bigint,
    fingerprint_id  text NOT NULL,
    session_id      text NOT NULL,
    seq             integer,
    outcome         text NOT NULL CHECK (outcome IN ('applied', 'stale')),
    extractor       text,
    model           text,
    input_tokens    integer NOT NULL DEFAULT 0,
    output_tokens   integer NOT NULL DEFAULT 0,
    cached_tokens   integer NOT NULL DEFAULT 0,
    latency_ms      real,
    result          jsonb NOT NULL,
    enqueued_at     timestamptz,
    created_at      timestamptz NOT NULL DEFAULT now()
);
-- A message is merged at most once, whatever redeliveries happen.
CREATE UNIQUE INDEX IF NOT EXISTS prospect_extractions_msg_idx
    ON public.prospect_extractions (msg_id) WHERE msg_id IS NOT NULL;
CREATE INDEX IF NOT EXISTS prospect_extractions_fingerprint_idx
    ON public.prospect_extractions (fingerprint_id, created_at);
CREATE INDEX IF NOT EXISTS prospect_extractions_session_idx
    ON public.prospect_extractions (session_id, created_at);

-- Merge rules kept apart so they read as rules: a new value replaces, a null never erases.
CREATE OR REPLACE FUNCTION nexus.merge_text(old_value text, new_value text)
RETURNS text
LANGUAGE sql IMMUTABLE
SET search_path = ''
AS $$ SELECT COALESCE(NULLIF(btrim(new_value), ''), old_value) $$;

-- Lists are unioned, keeping first-seen order and dropping case-insensitive repeats.
CREATE OR REPLACE FUNCTION nexus.merge_list(old_value text[], new_value text[])
RETURNS text[]
LANGUAGE sql IMMUTABLE
SET search_path = ''
AS $$
    SELECT COALESCE(array_agg(item ORDER BY first_pos), '{}')
    FROM (
        SELECT (array_agg(item ORDER BY pos))[1] AS item, min(pos) AS first_pos
        FROM unnest(COALESCE(old_value, '{}') || COALESCE(new_value, '{}'))
             WITH ORDINALITY AS u(item, pos)
        WHERE NULLIF(btrim(item), '') IS NOT NULL
        GROUP BY lower(btrim(item))
    ) AS deduped
$$;

CREATE OR REPLACE FUNCTION nexus.jsonb_text_array(value jsonb)
RETURNS text[]
LANGUAGE sql IMMUTABLE
SET search_path = ''
AS $$
    SELECT CASE jsonb_typeof(value)
        WHEN 'array' THEN ARRAY(SELECT jsonb_array_elements_text(value))
        WHEN 'string' THEN ARRAY[value #>> '{}']
        ELSE '{}'::text[]
    END
$$;

-- Out-of-range values are clamped here too, so a direct caller cannot break the row's checks.
CREATE OR REPLACE FUNCTION nexus.jsonb_interest(value jsonb)
RETURNS smallint
LANGUAGE sql IMMUTABLE
SET search_path = ''
AS $$
    SELECT CASE
        WHEN jsonb_typeof(value) = 'number' THEN greatest(1, least(10, round((value #>> '{}')::numeric)))::smallint
        WHEN jsonb_typeof(value) = 'string' AND (value #>> '{}') ~ '^\s*\d{1,2}\s*$'
            THEN greatest(1, least(10, btrim(value #>> '{}')::integer))::smallint
    END
$$;

CREATE OR REPLACE FUNCTION nexus.jsonb_intent(value jsonb)
RETURNS text
LANGUAGE sql IMMUTABLE
SET search_path = ''
AS $$
    SELECT CASE
        WHEN lower(btrim(value #>> '{}')) IN ('compra', 'informacion', 'soporte', 'queja', 'otro')
            THEN lower(btrim(value #>> '{}'))
        WHEN NULLIF(btrim(value #>> '{}'), '') IS NOT NULL THEN 'otro'
    END
$$;

-- Merge one extraction into prospect_data. Returns what happened:
--   'applied'   merged;
--   'stale'     a newer snapshot of the session was merged already, so this one changes nothing;
--   'duplicate' this message was merged before (a redelivery), nothing changes.
CREATE OR REPLACE FUNCTION public.update_prospect_data(
    p_fingerprint_id text,
    p_session_id text,
    p_data jsonb,
    p_msg_id bigint DEFAULT NULL,
    p_seq integer DEFAULT NULL,
    p_extractor text DEFAULT NULL,
    p_model text DEFAULT NULL,
    p_input_tokens integer DEFAULT 0,
    p_output_tokens integer DEFAULT 0,
    p_cached_tokens integer DEFAULT 0,
    p_latency_ms real DEFAULT NULL,
    p_enqueued_at timestamptz DEFAULT NULL
)
RETURNS text
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = ''
AS $$
DECLARE
    v_history_id bigint;
BEGIN
    INSERT INTO public.prospect_extractions AS e (
        msg_id, fingerprint_id, session_id, seq, outcome, extractor, model,
        input_tokens, output_tokens, cached_tokens, latency_ms, result, enqueued_at)
    VALUES (
        p_msg_id, p_fingerprint_id, p_session_id, p_seq, 'applied', p_extractor, p_model,
        COALESCE(p_input_tokens, 0), COALESCE(p_output_tokens, 0), COALESCE(p_cached_tokens, 0),
        p_latency_ms, COALESCE(p_data, '{}'), p_enqueued_at)
    ON CONFLICT (msg_id) WHERE msg_id IS NOT NULL DO NOTHING
    RETURNING e.id INTO v_history_id;
    IF v_history_id IS NULL THEN
        RETURN 'duplicate';
    END IF;

    -- Advancing the session's applied snapshot is also the staleness check: the row lock
    -- serialises concurrent merges of one session, and an older snapshot updates nothing.
    IF p_seq IS NOT NULL THEN
        UPDATE nexus.sessions s SET applied_seq = p_seq, updated_at = now()
        WHERE s.session_id = p_session_id AND s.applied_seq < p_seq;
        IF NOT FOUND THEN
            INSERT INTO nexus.sessions (session_id, fingerprint_id, last_seq, applied_seq)
            VALUES (p_session_id, p_fingerprint_id, p_seq, p_seq)
            ON CONFLICT (session_id) DO NOTHING;
            IF NOT FOUND THEN
                UPDATE public.prospect_extractions SET outcome = 'stale' WHERE id = v_history_id;
                RETURN 'stale';
            END IF;
        END IF;
    END IF;

    INSERT INTO public.prospect_data AS p (
        fingerprint_id, session_id, nombre, email, telefono, empresa, cargo, ubicacion,
        productos_interes, presupuesto, plazo, nivel_interes, intencion, idioma, resumen,
        last_msg_id, extraction_count)
    VALUES (
        p_fingerprint_id, p_session_id,
        NULLIF(btrim(p_data ->> 'nombre'), ''),
        NULLIF(btrim(p_data ->> 'email'), ''),
        NULLIF(btrim(p_data ->> 'telefono'), ''),
        NULLIF(btrim(p_data ->> 'empresa'), ''),
        NULLIF(btrim(p_data ->> 'cargo'), ''),
        NULLIF(btrim(p_data ->> 'ubicacion'), ''),
        nexus.merge_list('{}', nexus.jsonb_text_array(p_data -> 'productos_interes')),
        NULLIF(btrim(p_data ->> 'presupuesto'), ''),
        NULLIF(btrim(p_data ->> 'plazo'), ''),
        nexus.jsonb_interest(p_data -> 'nivel_interes'),
        nexus.jsonb_intent(p_data -> 'intencion'),
        NULLIF(btrim(p_data ->> 'idioma'), ''),
        NULLIF(btrim(p_data ->> 'resumen'), ''),
        p_msg_id, 1)
    ON CONFLICT (fingerprint_id) DO UPDATE SET
        session_id        = EXCLUDED.session_id,
        nombre            = nexus.merge_text(p.nombre, EXCLUDED.nombre),
        email             = nexus.merge_text(p.email, EXCLUDED.email),
        telefono          = nexus.merge_text(p.telefono, EXCLUDED.telefono),
        empresa           = nexus.merge_text(p.empresa, EXCLUDED.empresa),
        cargo             = nexus.merge_text(p.cargo, EXCLUDED.cargo),
        ubicacion         = nexus.merge_text(p.ubicacion, EXCLUDED.ubicacion),
        productos_interes = nexus.merge_list(p.productos_interes, EXCLUDED.productos_interes),
        presupuesto       = nexus.merge_text(p.presupuesto, EXCLUDED.presupuesto),
        plazo             = nexus.merge_text(p.plazo, EXCLUDED.plazo),
        nivel_interes     = COALESCE(EXCLUDED.nivel_interes, p.nivel_interes),
        intencion         = nexus.merge_text(p.intencion, EXCLUDED.intencion),
        idioma            = nexus.merge_text(p.idioma, EXCLUDED.idioma),
        resumen           = nexus.merge_text(p.resumen, EXCLUDED.resumen),
        last_msg_id       = COALESCE(EXCLUDED.last_msg_id, p.last_msg_id),
        extraction_count  = p.extraction_count + 1,
        updated_at        = now();
    RETURN 'applied';
END;
$$;

-- Prospects are personal data: with row-level security on and no policy for anon or
-- authenticated, a Supabase anon key reads nothing. The owner and service_role bypass it.
ALTER TABLE public.prospect_data ENABLE ROW LEVEL SECURITY;
ALTER TABLE public.prospect_extractions ENABLE ROW LEVEL SECURITY;
REVOKE ALL ON public.prospect_data, public.prospect_extractions FROM anon, authenticated;
GRANT SELECT, INSERT, UPDATE, DELETE ON public.prospect_data, public.prospect_extractions TO service_role;
REVOKE ALL ON FUNCTION public.update_prospect_data(
    text, text, jsonb, bigint, integer, text, text, integer, integer, integer, real, timestamptz) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION public.update_prospect_data(
    text, text, jsonb, bigint, integer, text, text, integer, integer, integer, real, timestamptz) TO service_role;
