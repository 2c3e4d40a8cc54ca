-- Most frequent errors, grouped by status (`failed`, `cancelled`) and a fingerprint that masks
-- quoted values, ids, hex and numbers (the same groups as the report's `error_groups`).
-- cd data/export && duckdb < ../../queries/top_errors.sql
WITH e AS (
    SELECT workflow_id, run_id, status, start_time, error,
        regexp_replace(regexp_replace(regexp_replace(regexp_replace(regexp_replace(regexp_replace(
            error,
            '''[^'']*''', '''…''', 'g'),
            '"[^"]*"', '"…"', 'g'),
            '[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}', '<id>', 'g'),
            '\b(0x)?[0-9a-fA-F]{8,}\b', '<hex>', 'g'),
            '\d+(\.\d+)?', '<n>', 'g'),
            '\s+', ' ', 'g') AS fingerprint
    FROM read_parquet('runs/**/*.parquet', hive_partitioning = true)
    WHERE error IS NOT NULL AND deleted_upstream_at IS NULL
)
SELECT status, fingerprint, count(*) AS count, count(DISTINCT workflow_id) AS workflows,
       min(start_time) AS first_seen, max(start_time) AS last_seen, any_value(error) AS sample_error
FROM e
GROUP BY status, fingerprint
ORDER BY count DESC, fingerprint, status
LIMIT 25;
