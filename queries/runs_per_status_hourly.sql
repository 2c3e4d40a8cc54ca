-- Runs per status per UTC hour.
-- cd data/export && duckdb < ../../queries/runs_per_status_hourly.sql
SELECT date_trunc('hour', start_time) AS hour, status, count(*) AS runs
FROM read_parquet('runs/**/*.parquet', hive_partitioning = true)
WHERE start_time IS NOT NULL
  AND deleted_upstream_at IS NULL   -- runs a --full export found deleted upstream
GROUP BY ALL
ORDER BY hour, status;
