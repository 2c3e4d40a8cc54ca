"""Reads an orchestra-export dataset with DuckDB, Polars and pyarrow and checks what users rely on:
the documented column types, Hive `date` partitions, unique keys, consistent child tables and
identical row counts across readers.

Usage: python check_dataset.py EXPORT_DIR
Prints one line per check and a closing "N passed, N failed"; exits 1 if anything failed.
"""

import sys
from pathlib import Path

import duckdb
import polars as pl
import pyarrow as pa
import pyarrow.dataset as ds

OUT = Path(sys.argv[1])
TS = "TIMESTAMP WITH TIME ZONE"
DUCK_TYPES = {
    "runs": {
        "workflow_id": "VARCHAR", "run_id": "VARCHAR", "status": "VARCHAR", "start_time": TS,
        "end_time": TS, "elapsed_time": "BIGINT", "duration_ms": "BIGINT", "error": "VARCHAR",
        "outputs": "VARCHAR", "node_count": "INTEGER", "inputs": "VARCHAR", "extracted_at": TS,
        "deleted_upstream_at": TS, "date": "DATE",
    },
    "node_outputs": {
        "workflow_id": "VARCHAR", "run_id": "VARCHAR", "start_time": TS, "node": "VARCHAR",
        "node_index": "INTEGER", "value_type": "VARCHAR", "value": "VARCHAR",
        "value_bytes": "BIGINT", "date": "DATE",
    },
    "run_inputs": {
        "workflow_id": "VARCHAR", "run_id": "VARCHAR", "start_time": TS, "name": "VARCHAR",
        "value_type": "VARCHAR", "value": "VARCHAR", "date": "DATE",
    },
}
if (OUT / "steps").exists():
    DUCK_TYPES["steps"] = {
        "workflow_id": "VARCHAR", "run_id": "VARCHAR", "step_id": "VARCHAR", "node_id": "VARCHAR",
        "status": "VARCHAR", "start_time": TS, "end_time": TS, "elapsed_time": "BIGINT",
        "duration_ms": "BIGINT", "error": "VARCHAR", "outputs": "VARCHAR", "inputs": "VARCHAR",
        "tokens": "BIGINT", "date": "DATE",
    }
KEYS = {
    "steps": "workflow_id, run_id, step_id",
    "runs": "workflow_id, run_id",
    "node_outputs": "workflow_id, run_id, node",
    "run_inputs": "workflow_id, run_id, name",
}
PL_TYPES = {
    "VARCHAR": pl.String, "BIGINT": pl.Int64, "INTEGER": pl.Int32, TS: pl.Datetime("us", "UTC"),
    "DATE": pl.Date,
}
PA_TYPES = {
    "VARCHAR": pa.string(), "BIGINT": pa.int64(), "INTEGER": pa.int32(),
    TS: pa.timestamp("us", tz="UTC"),
}

results = []


def check(name, ok, detail=""):
    results.append(ok)
    print(f"{'ok  ' if ok else 'FAIL'} {name}{': ' + detail if detail and not ok else ''}")


def scan(table):
    return f"read_parquet('{OUT / table}/**/*.parquet', hive_partitioning=true)"


con = duckdb.connect()
con.execute("SET TimeZone = 'UTC'")
counts = {}
for table, types in DUCK_TYPES.items():
    got = {r[0]: r[1] for r in con.execute(f"DESCRIBE SELECT * FROM {scan(table)}").fetchall()}
    check(f"duckdb {table} types", got == types, f"{got}")
    total, distinct = con.execute(
        f"SELECT count(*), count(DISTINCT ({KEYS[table]})) FROM {scan(table)}").fetchone()
    counts[table] = total
    check(f"duckdb {table} unique on ({KEYS[table]})", total == distinct and total > 0,
          f"{total} rows, {distinct} distinct")

wrong_partition = con.execute(
    f"SELECT count(*) FROM {scan('runs')} WHERE date IS DISTINCT FROM CAST(start_time AS DATE)"
).fetchone()[0]
check("duckdb runs partition date = UTC date of start_time", wrong_partition == 0, f"{wrong_partition}")
for child in ("node_outputs", "run_inputs"):
    orphans = con.execute(
        f"SELECT count(*) FROM {scan(child)} c ANTI JOIN {scan('runs')} r USING (workflow_id, run_id)"
    ).fetchone()[0]
    check(f"duckdb every {child} row has its run", orphans == 0, f"{orphans} orphans")
node_total = con.execute(f"SELECT sum(node_count) FROM {scan('runs')}").fetchone()[0]
check("duckdb sum(node_count) = node_outputs rows", node_total == counts["node_outputs"],
      f"{node_total} vs {counts['node_outputs']}")
bad_duration = con.execute(
    f"""SELECT count(*) FROM {scan('runs')}
        WHERE duration_ms IS DISTINCT FROM (epoch_us(end_time) - epoch_us(start_time)) // 1000"""
).fetchone()[0]
check("duckdb duration_ms = end_time - start_time", bad_duration == 0, f"{bad_duration}")

if (OUT / "workflows").exists():
    wf = con.execute(f"SELECT count(*), count(DISTINCT workflow_id) FROM {scan('workflows')}").fetchone()
    check("duckdb workflows table unique", wf[0] == wf[1] and wf[0] > 0, f"{wf}")

for table, types in DUCK_TYPES.items():
    frame = pl.scan_parquet(f"{OUT / table}/**/*.parquet", hive_partitioning=True).collect()
    want = {c: PL_TYPES[t] for c, t in types.items()}
    got = dict(frame.schema)
    # Polars infers the Hive `date` column's type from its values; a date string parses as Date.
    check(f"polars {table} types", got == want, f"{got}")
    check(f"polars {table} rows = duckdb", frame.height == counts[table], f"{frame.height}")

for table, types in DUCK_TYPES.items():
    dataset = ds.dataset(OUT / table, format="parquet", partitioning="hive")
    schema = dataset.schema
    want = {c: PA_TYPES[t] for c, t in types.items() if c != "date"}
    got = {f.name: f.type for f in schema if f.name != "date"}
    check(f"pyarrow {table} types", got == want, f"{got}")
    check(f"pyarrow {table} rows = duckdb", dataset.count_rows() == counts[table],
          f"{dataset.count_rows()}")

# The report's numbers equal the same numbers computed independently in DuckDB.
REPORTS = OUT / "_reports"
if (REPORTS / "workflow_summary.parquet").exists():
    def close(a, b):
        if a is None or b is None:
            return a is None and b is None
        return abs(a - b) <= 1e-9 * max(1.0, abs(a), abs(b))

    def rows_equal(name, report_sql, duck_sql):
        got = {r[0]: r[1:] for r in con.execute(report_sql).fetchall()}
        want = {r[0]: r[1:] for r in con.execute(duck_sql).fetchall()}
        bad = [k for k in want if k not in got or not all(close(x, y) for x, y in zip(got[k], want[k]))]
        check(f"report {name} equals DuckDB", len(got) == len(want) and not bad and len(want) > 0,
              f"{len(got)} vs {len(want)} rows, differing: {bad[:3]} {[(got.get(k), want[k]) for k in bad[:2]]}")

    rows_equal(
        "workflow_summary (runs, failed, error rate, p50, p95, p99)",
        f"SELECT workflow_id, runs, failed, error_rate, p50_s, p95_s, p99_s FROM read_parquet('{REPORTS}/workflow_summary.parquet')",
        f"""SELECT workflow_id, count(*), count(*) FILTER (WHERE status = 'failed'),
                   count(*) FILTER (WHERE status = 'failed') / count(*),
                   quantile_cont(duration_ms / 1000.0, 0.5), quantile_cont(duration_ms / 1000.0, 0.95),
                   quantile_cont(duration_ms / 1000.0, 0.99)
            FROM {scan('runs')} GROUP BY workflow_id""",
    )
    rows_equal(
        "daily_trends (runs, failed, error rate, p50, p95)",
        f"SELECT day || '/' || workflow_id, runs, failed, error_rate, p50_s, p95_s FROM read_parquet('{REPORTS}/daily_trends.parquet')",
        f"""SELECT CAST(start_time AS DATE) || '/' || workflow_id, count(*),
                   count(*) FILTER (WHERE status = 'failed'), count(*) FILTER (WHERE status = 'failed') / count(*),
                   quantile_cont(duration_ms / 1000.0, 0.5), quantile_cont(duration_ms / 1000.0, 0.95)
            FROM {scan('runs')} WHERE start_time IS NOT NULL GROUP BY 1""",
    )
    fingerprint_sql = (Path(__file__).resolve().parents[2] / "queries" / "top_errors.sql").read_text()
    fingerprint_sql = fingerprint_sql.replace("runs/**/*.parquet", f"{OUT}/runs/**/*.parquet").replace("LIMIT 25", "")
    rows_equal(
        "error_groups (count and workflows per status and fingerprint) equals queries/top_errors.sql",
        f"SELECT status || ' ' || fingerprint, count, workflows FROM read_parquet('{REPORTS}/error_groups.parquet')",
        f"SELECT status || ' ' || fingerprint, count, workflows FROM ({fingerprint_sql.rstrip().rstrip(';')})",
    )
    rows_equal(
        "node_stats (outputs, p50 and p95 of their bytes per workflow and node)",
        f"SELECT workflow_id || '/' || node, rows, output_bytes_p50, output_bytes_p95 FROM read_parquet('{REPORTS}/node_stats.parquet')",
        f"""SELECT workflow_id || '/' || node, count(*), quantile_cont(strlen(value), 0.5),
                   quantile_cont(strlen(value), 0.95)
            FROM {scan('node_outputs')} GROUP BY 1""",
    )
    if (REPORTS / "slowest_nodes.parquet").exists():
        rows_equal(
            "slowest_nodes (steps, p50 and p95 per workflow and node)",
            f"SELECT workflow_id || '/' || node_id, steps, p50_s, p95_s FROM read_parquet('{REPORTS}/slowest_nodes.parquet')",
            f"""SELECT workflow_id || '/' || node_id, count(*), quantile_cont(duration_ms / 1000.0, 0.5),
                       quantile_cont(duration_ms / 1000.0, 0.95)
                FROM {scan('steps')} GROUP BY 1""",
        )
    for name in ["overview", "workflow_summary", "daily_trends", "error_groups", "node_stats", "slowest_runs", "regressions"]:
        n_parquet = con.execute(f"SELECT count(*) FROM read_parquet('{REPORTS}/{name}.parquet')").fetchone()[0]
        n_csv = con.execute(f"SELECT count(*) FROM read_csv('{REPORTS}/{name}.csv')").fetchone()[0]
        check(f"report {name} has the same rows in Parquet and CSV", n_parquet == n_csv, f"{n_parquet} vs {n_csv}")
    html = (REPORTS / "report.html").read_text()
    check("report.html is self-contained with charts",
          html.count("<svg") >= 4 and "http://" not in html.replace("http://www.w3.org", "") and "<script" not in html,
          "svg/script/link check")

# Every query in queries/ runs, from the export folder as its header says, and returns rows.
import os

queries = sorted((Path(__file__).resolve().parents[2] / "queries").glob("*.sql"))
os.chdir(OUT)
for query in queries:
    try:
        rows = duckdb.connect().execute(query.read_text()).fetchall()
        check(f"query {query.name} returns rows", len(rows) > 0, "no rows")
    except duckdb.Error as e:
        check(f"query {query.name} runs", False, str(e))

passed = sum(results)
failed = len(results) - passed
print(f"{passed} passed, {failed} failed")
sys.exit(1 if failed else 0)
