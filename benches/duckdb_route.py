"""The DuckDB route the performance issue compares against, for `benches/e2e.rs`.

Reads pages already downloaded to PAGES_DIR (one file per page, named `<workflow>__<offset>.json`)
with `read_json`, keeps the first copy of each run (pages overlap), and writes the same three
tables with the same columns the exporter writes — runs, node_outputs (one row per entry of
`all_outputs`, via `json_each`), run_inputs (one per entry of `inputs`) — as zstd Parquet, one
file per table. Uses 2 threads (the machine's cores). Prints one line:
`DUCKDB <seconds> <parquet bytes> <runs>`.

Usage: python duckdb_route.py PAGES_DIR OUT_DIR
"""

import os
import sys
import time

import duckdb


def main():
    pages, out = sys.argv[1], sys.argv[2]
    started = time.monotonic()
    con = duckdb.connect()
    con.execute("SET threads = 2")
    con.execute(f"""
        CREATE TEMP TABLE raw AS
        SELECT DISTINCT ON (workflow_id, id) *
        FROM (
            SELECT split_part(parse_filename(filename, true), '__', 1) AS workflow_id, *
            FROM read_json('{pages}/*.json', format = 'array', filename = true,
                columns = {{id: 'VARCHAR', status: 'VARCHAR', start_time: 'TIMESTAMPTZ',
                           end_time: 'TIMESTAMPTZ', elapsed_time: 'BIGINT', error: 'VARCHAR',
                           outputs: 'JSON', all_outputs: 'JSON', inputs: 'JSON'}})
        )
    """)
    text = "CASE json_type({0}) WHEN 'VARCHAR' THEN {0} ->> '$' ELSE CAST({0} AS VARCHAR) END"
    options = "(FORMAT parquet, COMPRESSION zstd)"
    con.execute(f"""
        COPY (
            SELECT workflow_id, id AS run_id, status, start_time, end_time, elapsed_time,
                   (epoch_us(end_time) - epoch_us(start_time)) // 1000 AS duration_ms,
                   error, {text.format('outputs')} AS outputs,
                   CAST(coalesce(len(json_keys(all_outputs)), 0) AS INTEGER) AS node_count,
                   CAST(inputs AS VARCHAR) AS inputs, now() AS extracted_at
            FROM raw
        ) TO '{out}/runs.parquet' {options}
    """)
    for table, column, index in [("node_outputs", "all_outputs", True),
                                 ("run_inputs", "inputs", False)]:
        position = ", CAST(row_number() OVER (PARTITION BY raw.workflow_id, raw.id ORDER BY e.id) - 1 AS INTEGER) AS node_index" if index else ""
        name = "node" if index else "name"
        con.execute(f"""
            COPY (
                SELECT raw.workflow_id, raw.id AS run_id, raw.start_time, e.key AS {name}{position},
                       CASE e.type WHEN 'VARCHAR' THEN 'string' WHEN 'OBJECT' THEN 'object'
                           WHEN 'ARRAY' THEN 'array' WHEN 'BOOLEAN' THEN 'boolean'
                           WHEN 'NULL' THEN 'null' ELSE 'number' END AS value_type, {text.format('e.value')} AS value
                FROM raw, json_each(raw.{column}) AS e
            ) TO '{out}/{table}.parquet' {options}
        """)
    runs = con.execute("SELECT count(*) FROM raw").fetchone()[0]
    elapsed = time.monotonic() - started
    size = sum(os.path.getsize(os.path.join(out, f)) for f in os.listdir(out))
    print(f"DUCKDB {elapsed:.3f} {size} {runs}")


if __name__ == "__main__":
    main()
