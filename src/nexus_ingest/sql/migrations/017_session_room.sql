-- More room on a session row's page. A session row is rewritten three times per snapshot
-- (numbered by the producer, leased by the read, advanced by the save). A rewrite that fits on
-- the row's own page is a HOT update: no new entry in either of the table's indexes, and one
-- WAL record instead of three. With `fillfactor = 70` (010), 37-42% of 2,000 drained session
-- rows had moved off their page; at 40, 0-15 of them (tests/integration/test_session_rows.py),
-- and the no-op drain ran 1.13x as fast (docs/PERFORMANCE.md). The table is small (a row per
-- chat), so the space is cheap. Pages already written keep their rows until rewritten.
ALTER TABLE nexus.sessions SET (fillfactor = 40);
