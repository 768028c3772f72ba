-- `nexus.merge_list` as a loop for the lists it is given. The set-based version of 005 (unnest,
-- group, aggregate) is a SQL function that Postgres cannot inline: every call ran its query
-- through the SQL function executor, 10 µs a call with its plan made again for every statement
-- that calls it. Every saved extraction that names a product calls it once, and once more when
-- the visitor already has a row. The loop gives the same list (first spelling of each product
-- kept, blanks dropped, first-seen order; tests/integration/test_merge_list.py holds it to
-- 005's version) in 3 µs a call: Postgres's CPU a saved message went from 67.4 to 59.0 µs in a
-- rules drain of chats naming a product (docs/PERFORMANCE.md). Its look-up of what it has seen
-- is linear, so a long stored list (hundreds of products, several from every turn) takes the
-- query, which sorts: at 500 items the loop alone took 5.1 ms and the query 2.8.
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
                GROUP BY pg_catalog.lower(pg_catalog.btrim(u.item))
            ) AS d
        );
    END IF;
    FOREACH v_item IN ARRAY v_all LOOP
        v_key := pg_catalog.lower(pg_catalog.btrim(v_item));
        -- A null or blank item has a null or empty key, and is dropped.
        IF v_key <> '' AND v_key <> ALL (v_seen) THEN
            v_seen := v_seen || v_key;
            v_merged := v_merged || v_item;
        END IF;
    END LOOP;
    RETURN v_merged;
END;
$$;
