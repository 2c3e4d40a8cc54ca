-- p50 / p95 run duration (seconds, end_time − start_time) per workflow per UTC day.
-- quantile_cont interpolates linearly, like the report (numpy's default).
-- cd data/export && duckdb < ../../queries/duration_trend.sql
SELECT
    CAST(start_time AS DATE)                                  AS day,
    workflow_id,
    count(duration_ms)                                        AS finished_runs,
    round(quantile_cont(duration_ms, 0.5) / 1000, 3)          AS p50_s,
    round(quantile_cont(duration_ms, 0.95) / 1000, 3)         AS p95_s
FROM read_parquet('runs/**/*.parquet', hive_partitioning = true)
WHERE start_time IS NOT NULL
  AND deleted_upstream_at IS NULL   -- runs a --full export found deleted upstream
GROUP BY ALL
ORDER BY day, workflow_id;
