-- The spec's verification and monitoring queries, corrected to run: pg_stat_user_indexes names
-- its columns relname / indexrelname (the spec's "tablename" / "indexname" do not exist there).
-- psra-bench's `migrate verify` runs each block below and prints it as a table.

-- title: Index count (schema public)
SELECT schemaname, count(*) AS index_count
FROM pg_stat_user_indexes
WHERE schemaname = 'public'
GROUP BY schemaname;

-- title: Index size per table
SELECT relname AS tablename,
       count(*) AS num_indexes,
       pg_size_pretty(sum(pg_relation_size(indexrelid))) AS total_index_size,
       pg_size_pretty(pg_relation_size(relid)) AS table_size
FROM pg_stat_user_indexes
WHERE schemaname = 'public'
GROUP BY relname, relid
ORDER BY sum(pg_relation_size(indexrelid)) DESC;

-- title: Index usage
SELECT relname AS tablename,
       indexrelname AS indexname,
       idx_scan AS scans,
       idx_tup_read AS tuples_read,
       idx_tup_fetch AS tuples_fetched,
       pg_size_pretty(pg_relation_size(indexrelid)) AS size
FROM pg_stat_user_indexes
WHERE schemaname = 'public'
ORDER BY idx_scan DESC, indexrelname;

-- title: Unused indexes (candidates for removal)
SELECT relname AS tablename,
       indexrelname AS indexname,
       pg_size_pretty(pg_relation_size(indexrelid)) AS size
FROM pg_stat_user_indexes
WHERE schemaname = 'public'
  AND idx_scan = 0
  AND indexrelname NOT LIKE '%\_pkey'
ORDER BY pg_relation_size(indexrelid) DESC, indexrelname;

-- title: Invalid indexes (left by an interrupted CREATE INDEX CONCURRENTLY)
SELECT c.relname AS indexname, t.relname AS tablename
FROM pg_index i
JOIN pg_class c ON c.oid = i.indexrelid
JOIN pg_class t ON t.oid = i.indrelid
JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE n.nspname = 'public' AND NOT (i.indisvalid AND i.indisready);
