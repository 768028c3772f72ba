-- More room on a session row's page. A session row is rewritten three times per snapshot
-- (numbered by the producer, leased by the read, advanced by the save). A rewrite that fits on
-- the row's own page is a HOT update: no new entry in either of the table's indexes, and one
-- WAL record instead of three. With `fillfactor = 70` (010) a drain of 20,000 one-snapshot
-- sessions found room for 57% of them; at 40 for all of them, and the read and save cost
-- Postgres ~4 µs a message less (docs/PERFORMANCE.md). The table is small (a row per chat),
-- so the space is cheap. Pages already written keep their rows as they are until rewritten.
ALTER TABLE nexus.sessions SET (fillfactor = 40);
