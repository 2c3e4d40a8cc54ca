-- One run with its node outputs and inputs, in node order.
-- Defaults to the most recent failed run; set the run id to look at another:
--   cd data/export && duckdb -c "SET VARIABLE run_id = '…'" -c ".read ../../queries/run_detail.sql"
WITH target AS (
    SELECT coalesce(
        getvariable('run_id'),
        (SELECT run_id FROM read_parquet('runs/**/*.parquet', hive_partitioning = true)
         WHERE status = 'failed' ORDER BY start_time DESC LIMIT 1)
    ) AS run_id
)
SELECT r.workflow_id, r.run_id, r.status, r.start_time, r.duration_ms, r.error,
       'output' AS kind, n.node_index AS position, n.node AS name, n.value_type, n.value
FROM read_parquet('runs/**/*.parquet', hive_partitioning = true) r
JOIN target USING (run_id)
JOIN read_parquet('node_outputs/**/*.parquet', hive_partitioning = true) n USING (workflow_id, run_id)
UNION ALL
SELECT r.workflow_id, r.run_id, r.status, r.start_time, r.duration_ms, r.error,
       'input', NULL, i.name, i.value_type, i.value
FROM read_parquet('runs/**/*.parquet', hive_partitioning = true) r
JOIN target USING (run_id)
JOIN read_parquet('run_inputs/**/*.parquet', hive_partitioning = true) i USING (workflow_id, run_id)
ORDER BY kind DESC, position NULLS LAST;
