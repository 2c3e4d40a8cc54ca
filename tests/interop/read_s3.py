"""Reads an orchestra-export dataset straight from an S3-compatible endpoint with pyarrow and
Polars, and prints what a downstream job relies on, per table, as one JSON object.

Usage: python read_s3.py ENDPOINT BUCKET/PREFIX
The credentials are the `AWS_ACCESS_KEY_ID` / `AWS_SECRET_ACCESS_KEY` of the environment.
"""

import json
import os
import sys

import polars as pl
import pyarrow.dataset as ds
import pyarrow.fs as fs

ENDPOINT, ROOT = sys.argv[1], sys.argv[2].rstrip("/")
KEY, SECRET = os.environ["AWS_ACCESS_KEY_ID"], os.environ["AWS_SECRET_ACCESS_KEY"]
s3 = fs.S3FileSystem(
    access_key=KEY,
    secret_key=SECRET,
    region="us-east-1",
    endpoint_override=ENDPOINT,
    scheme="http",
)
storage_options = {
    "aws_access_key_id": KEY,
    "aws_secret_access_key": SECRET,
    "aws_region": "us-east-1",
    "aws_endpoint_url": ENDPOINT,
    "aws_allow_http": "true",
}
KEYS = {"runs": [], "node_outputs": ["node"], "run_inputs": ["name"]}
result = {}
for table, extra in KEYS.items():
    data = ds.dataset(f"{ROOT}/{table}", filesystem=s3, format="parquet", partitioning="hive")
    t = data.to_table()
    cols = ["workflow_id", "run_id", *extra]
    keys = set(zip(*(t[c].to_pylist() for c in cols)))
    df = pl.scan_parquet(
        f"s3://{ROOT}/{table}/**/*.parquet",
        storage_options=storage_options,
        hive_partitioning=True,
    ).collect()
    result[table] = {
        "pyarrow_rows": t.num_rows,
        "pyarrow_distinct_keys": len(keys),
        "polars_rows": df.height,
        "polars_distinct_keys": df.select(cols).unique().height,
        "partitions": len(data.files),
    }
print(json.dumps(result))
