-- Lists merged across extractions (`productos_interes`) count two spellings as one product when
-- they differ only by accents, as they already did by case and surrounding spaces: a model that
-- writes "Diseño web" in one turn and "diseno web" in the next no longer lists it twice. The
-- extractors' own clean-up folds accents the same way within one answer (extract/clamp.py);
-- `translate` rather than `normalize`, which fails on a database whose encoding is not UTF8.

-- The key two spellings of one item share; NULL or '' for a blank item. Capitals with accents
-- are listed too: under the C locale `lower` changes only ASCII letters. No `SET search_path`
-- (every name in it is qualified): with one, Postgres would not inline it into its callers.
CREATE FUNCTION nexus.list_key(p_item text)
RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE
AS $$
    SELECT pg_catalog.translate(pg_catalog.lower(pg_catalog.btrim(p_item)),
                                'áàâäãåāéèêëēíìîïīóòôöõōúùûüūñçýÿÁÀÂÄÃÅĀÉÈÊËĒÍÌÎÏĪÓÒÔÖÕŌÚÙÛÜŪÑÇÝŸ',
                                'aaaaaaaeeeeeiiiiioooooouuuuuncyyaaaaaaaeeeeeiiiiioooooouuuuuncyy')
$$;
REVOKE ALL ON FUNCTION nexus.list_key(text) FROM PUBLIC;

-- As in 018, keyed by `nexus.list_key` in both of its ways (tests/integration/test_merge_list.py
-- holds the two to 005's query grouped by that key).
CREATE OR REPLACE FUNCTION nexus.merge_list(old_value text[], new_value text[])
RETURNS text[]
LANGUAGE plpgsql IMMUTABLE
SET search_path = ''
AS $$
DECLARE
    v_all constant text[] := COALESCE(old_value, '{}') || COALESCE(new_value, '{}');
    v_merged text[] := '{}';
    v_seen text[] := '{}';
    v_item text;
    v_key text;
BEGIN
    IF pg_catalog.cardinality(v_all) > 100 THEN
        RETURN (
            SELECT COALESCE(pg_catalog.array_agg(d.item ORDER BY d.first_pos), '{}')
            FROM (
                SELECT (pg_catalog.array_agg(u.item ORDER BY u.pos))[1] AS item,
                       pg_catalog.min(u.pos) AS first_pos
                FROM pg_catalog.unnest(v_all) WITH ORDINALITY AS u(item, pos)
                WHERE NULLIF(pg_catalog.btrim(u.item), '') IS NOT NULL
                GROUP BY nexus.list_key(u.item)
            ) AS d
        );
    END IF;
    FOREACH v_item IN ARRAY v_all LOOP
        -- `nexus.list_key`, written out: called, or with `translate` on every item, it made
        -- a merge twice as slow; most products are plain ASCII, which it leaves as they are.
        v_key := pg_catalog.lower(pg_catalog.btrim(v_item));
        IF pg_catalog.octet_length(v_key) <> pg_catalog.length(v_key) THEN
            v_key := pg_catalog.translate(v_key,
                'áàâäãåāéèêëēíìîïīóòôöõōúùûüūñçýÿÁÀÂÄÃÅĀÉÈÊËĒÍÌÎÏĪÓÒÔÖÕŌÚÙÛÜŪÑÇÝŸ',
                'aaaaaaaeeeeeiiiiioooooouuuuuncyyaaaaaaaeeeeeiiiiioooooouuuuuncyy');
        END IF;
        -- A null or blank item has a null or empty key, and is dropped.
        IF v_key <> '' AND v_key <> ALL (v_seen) THEN
            v_seen := v_seen || v_key;
            v_merged := v_merged || v_item;
        END IF;
    END LOOP;
    RETURN v_merged;
END;
$$;
