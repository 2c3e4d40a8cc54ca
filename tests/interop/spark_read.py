"""Reads orchestra-export datasets with Spark (pyspark, local[2]) the way a user would: each
table folder with `spark.read.parquet`, partitions discovered from the `date=` folders.

Usage: spark_read.py DATASET [DATASET ...]

Prints one line `RESULT {json}` with what Spark saw per dataset and table (row counts, column
types, partition values, exact timestamps of known runs, a join); the Rust test
`tests/it/interop.rs` checks the values. One JVM for everything: Spark starts once.
"""

import json
import os
import shutil
import sys
import tempfile
import time

from pyspark.sql import SparkSession

TABLES = ["runs", "node_outputs", "run_inputs", "steps", "workflows"]
# The run of data/samples/docs-example.json, whose timestamps are known.
DOCS_RUN = "a40d4d53-7e5e-432b-8f23-8afdc53eefa3"


def main(paths):
    started = time.monotonic()
    # Tables created by `external_table` keep their catalog here, not in the working folder.
    warehouse = tempfile.mkdtemp(prefix="orchestra-spark-")
    spark = (
        SparkSession.builder.master("local[2]")
        .appName("orchestra-export read test")
        .config("spark.sql.session.timeZone", "UTC")
        .config("spark.sql.warehouse.dir", os.path.join(warehouse, "warehouse"))
        .config("spark.ui.enabled", "false")
        .config("spark.driver.host", "127.0.0.1")
        .config("spark.driver.bindAddress", "127.0.0.1")
        .config("spark.sql.shuffle.partitions", "2")
        # List partition folders on the driver instead of in a Spark job per table (the job
        # costs more than the listing on a dataset this size), and no progress bars.
        .config("spark.sql.sources.parallelPartitionDiscovery.threshold", "100000")
        .config("spark.ui.showConsoleProgress", "false")
        .getOrCreate()
    )
    spark.sparkContext.setLogLevel("ERROR")
    startup = time.monotonic() - started
    result = {"spark_version": spark.version, "startup_s": round(startup, 1), "datasets": []}
    for path in paths:
        result["datasets"].append(read_dataset(spark, path))
    spark.stop()
    shutil.rmtree(warehouse, ignore_errors=True)
    result["total_s"] = round(time.monotonic() - started, 1)
    print("RESULT " + json.dumps(result, sort_keys=True))


def read_dataset(spark, path):
    out = {"path": path, "tables": {}}
    for table in TABLES:
        folder = os.path.join(path, table)
        if not os.path.isdir(folder):
            continue
        # Partition discovery: `date=YYYY-MM-DD` folders become a `date` column.
        df = spark.read.parquet(folder)
        df.createOrReplaceTempView(table)
        info = {
            "rows": df.count(),
            "types": {f.name: f.dataType.simpleString() for f in df.schema.fields},
            "files": sorted(
                {os.path.basename(f) for f in df.inputFiles()}
            ),
        }
        if "date" in df.columns:
            row = spark.sql(
                f"SELECT count(DISTINCT date) AS dates, count_if(date IS NULL) AS undated, "
                f"CAST(min(date) AS STRING) AS first, CAST(max(date) AS STRING) AS last FROM {table}"
            ).first()
            info["dates"] = row["dates"]
            info["undated_rows"] = row["undated"]
            info["first_date"] = row["first"]
            info["last_date"] = row["last"]
        out["tables"][table] = info

    # Exact instants, independent of any time zone: micros since the epoch, and the UTC text.
    docs = spark.sql(
        f"""SELECT unix_micros(start_time) AS start_us, unix_micros(end_time) AS end_us,
                   date_format(start_time, "yyyy-MM-dd'T'HH:mm:ss.SSSSSS") AS start_text,
                   CAST(date AS STRING) AS date, elapsed_time, duration_ms, node_count
            FROM runs WHERE run_id = '{DOCS_RUN}'"""
    ).collect()
    out["docs_run"] = [r.asDict() for r in docs]
    # Every run with its node outputs: a join and an aggregation across partitions.
    joined = spark.sql(
        """SELECT count(*) AS runs, sum(nodes) AS node_rows,
                  count_if(nodes = node_count) AS runs_matching_node_count,
                  count_if(date IS NULL) AS undated_runs
           FROM (SELECT r.workflow_id, r.run_id, r.node_count, r.date, count(n.node) AS nodes
                 FROM runs r LEFT JOIN node_outputs n
                   ON n.workflow_id = r.workflow_id AND n.run_id = r.run_id
                 GROUP BY r.workflow_id, r.run_id, r.node_count, r.date)"""
    ).first()
    out["join"] = joined.asDict()
    out["docs_run_nodes"] = [
        r["node"]
        for r in spark.sql(
            f"""SELECT n.node FROM runs r JOIN node_outputs n
                  ON n.workflow_id = r.workflow_id AND n.run_id = r.run_id
                WHERE r.run_id = '{DOCS_RUN}' ORDER BY n.node_index"""
        ).collect()
    ]
    out["external_table"] = external_table(spark, path)
    out["distinct_run_keys"] = spark.sql(
        "SELECT count(*) AS n FROM (SELECT DISTINCT workflow_id, run_id FROM runs)"
    ).first()["n"]
    return out


# The DDL `docs/engines.md` documents for Spark SQL, run as written there (with the path filled in).
RUNS_DDL = """
CREATE TABLE orchestra_runs (
  workflow_id STRING, run_id STRING, status STRING,
  start_time TIMESTAMP, end_time TIMESTAMP, elapsed_time BIGINT, duration_ms BIGINT,
  error STRING, outputs STRING, node_count INT, inputs STRING, extracted_at TIMESTAMP,
  deleted_upstream_at TIMESTAMP, date DATE
)
USING parquet
PARTITIONED BY (date)
LOCATION '{location}'
"""


def external_table(spark, path):
    spark.sql("DROP TABLE IF EXISTS orchestra_runs")
    spark.sql(RUNS_DDL.format(location=os.path.join(path, "runs")))
    before = spark.sql("SELECT count(*) AS n FROM orchestra_runs").first()["n"]
    spark.sql("MSCK REPAIR TABLE orchestra_runs")
    row = spark.sql(
        "SELECT count(*) AS n, count_if(date IS NULL) AS undated FROM orchestra_runs"
    ).first()
    partitions = spark.sql("SHOW PARTITIONS orchestra_runs").count()
    # A table over the unpartitioned `workflows` folder, its schema read from the files.
    spark.sql("DROP TABLE IF EXISTS orchestra_workflows")
    spark.sql(
        f"CREATE TABLE orchestra_workflows USING parquet LOCATION '{os.path.join(path, 'workflows')}'"
    )
    workflows = spark.sql("SELECT count(*) AS n FROM orchestra_workflows").first()["n"]
    spark.sql("DROP TABLE orchestra_runs")
    spark.sql("DROP TABLE orchestra_workflows")
    return {
        "rows_before_repair": before,
        "rows": row["n"],
        "undated_rows": row["undated"],
        "partitions": partitions,
        "workflows_rows": workflows,
    }


if __name__ == "__main__":
    main(sys.argv[1:])
