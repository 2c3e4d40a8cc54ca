-- Error rate per workflow per UTC day: failed ÷ all runs (the report's definition).
-- cd data/export && duckdb < ../../queries/error_rate_daily.sql
SELECT
    CAST(start_time AS DATE)                                   AS day,
    workflow_id,
    count(*)                                                   AS runs,
    count(*) FILTER (WHERE status = 'failed')                  AS failed,
    round(count(*) FILTER (WHERE status = 'failed') / count(*), 4) AS error_rate
FROM read_parquet('runs/**/*.parquet', hive_partitioning = true)
WHERE start_time IS NOT NULL
  AND deleted_upstream_at IS NULL   -- runs a --full export found deleted upstream
GROUP BY ALL
ORDER BY day, workflow_id;
