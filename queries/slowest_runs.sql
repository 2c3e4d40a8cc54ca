-- The slowest runs, with their workflow's name when the `workflows` table exists.
-- Change the LIMIT for more.  cd data/export && duckdb < ../../queries/slowest_runs.sql
SELECT r.workflow_id, r.run_id, r.status, r.start_time,
       round(r.duration_ms / 1000, 3) AS duration_s, r.error
FROM read_parquet('runs/**/*.parquet', hive_partitioning = true) r
WHERE r.duration_ms IS NOT NULL AND r.deleted_upstream_at IS NULL
ORDER BY r.duration_ms DESC, r.run_id
LIMIT 20;
