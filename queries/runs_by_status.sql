-- Runs per workflow and status, with median and p95 duration in seconds.
-- Run from an export folder:  cd data/export && duckdb < ../../queries/runs_by_status.sql
SELECT
    workflow_id,
    status,
    count(*)                                      AS runs,
    round(median(duration_ms) / 1000, 3)          AS p50_s,
    round(quantile_cont(duration_ms, 0.95) / 1000, 3) AS p95_s
FROM read_parquet('runs/**/*.parquet', hive_partitioning = true)
WHERE deleted_upstream_at IS NULL   -- runs a --full export found deleted upstream
GROUP BY ALL
ORDER BY workflow_id, runs DESC;
