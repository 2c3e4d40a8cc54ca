-- Node outputs whose text contains a string (case-insensitive), newest first.
-- Default search: 'refund'. To search for something else:
--   cd data/export && duckdb -c "SET VARIABLE needle = 'timeout'" -c ".read ../../queries/node_output_search.sql"
SELECT n.workflow_id, n.run_id, n.start_time, n.node, n.value_type,
       left(n.value, 200) AS value_start
FROM read_parquet('node_outputs/**/*.parquet', hive_partitioning = true) n
WHERE n.value ILIKE '%' || coalesce(getvariable('needle'), 'refund') || '%'
ORDER BY n.start_time DESC, n.run_id, n.node_index
LIMIT 100;
