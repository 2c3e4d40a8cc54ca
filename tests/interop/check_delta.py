"""Reads a `--table-format delta` export with delta-rs (`deltalake`) and Polars `scan_delta`.

Usage: check_delta.py ROOT [VERSION]

ROOT is a folder or an `s3://` URL (then the `AWS_*` variables of the test's S3 server apply).
Prints one line `RESULT {json}`: per table its version, row count, column types and whether the
two readers agree; for `runs` each run's status by `workflow_id/run_id`, the duplicated keys,
whether each row's `date` partition is its `start_time` day, the runs marked deleted upstream
and each column's non-null count. With VERSION, `runs` is also
read at that version (time travel) and reported as `runs_at_version`.
"""

import json
import os
import sys

import polars as pl
from deltalake import DeltaTable

TABLES = ["runs", "node_outputs", "run_inputs", "steps", "workflows"]


def storage_options(root):
    if not root.startswith("s3://"):
        return None
    return {
        "AWS_ENDPOINT_URL": os.environ["AWS_ENDPOINT_URL"],
        "AWS_ACCESS_KEY_ID": os.environ["AWS_ACCESS_KEY_ID"],
        "AWS_SECRET_ACCESS_KEY": os.environ["AWS_SECRET_ACCESS_KEY"],
        "AWS_REGION": os.environ.get("AWS_REGION", "us-east-1"),
        "AWS_ALLOW_HTTP": "true",
        "AWS_S3_ALLOW_UNSAFE_RENAME": "true",
    }


def runs_facts(frame):
    keys = [f"{w}/{r}" for w, r in zip(frame["workflow_id"], frame["run_id"])]
    seen, duplicates = set(), []
    for key in keys:
        if key in seen:
            duplicates.append(key)
        seen.add(key)
    status = dict(zip(keys, frame["status"]))
    wrong_day = 0
    for start, day in zip(frame["start_time"], frame["date"]):
        expected = None if start is None else start.date()
        if expected != day:
            wrong_day += 1
    marked = sorted(
        k for k, at in zip(keys, frame["deleted_upstream_at"]) if at is not None
    )
    non_null = {c: frame.height - frame[c].null_count() for c in frame.columns}
    return {
        "status": status,
        "duplicates": duplicates,
        "wrong_day": wrong_day,
        "marked_deleted": marked,
        "non_null": non_null,
    }


def main():
    root = sys.argv[1].rstrip("/")
    version = int(sys.argv[2]) if len(sys.argv) > 2 else None
    options = storage_options(root)
    result = {}
    for name in TABLES:
        path = f"{root}/{name}"
        try:
            table = DeltaTable(path, storage_options=options)
        except Exception as e:  # a table the export did not write (steps without --with-steps)
            result[name] = {"missing": str(e).splitlines()[0]}
            continue
        arrow = table.to_pyarrow_table()
        frame = pl.from_arrow(arrow)
        scanned = pl.scan_delta(path, storage_options=options).collect()
        entry = {
            "version": table.version(),
            "rows": arrow.num_rows,
            "types": {f.name: str(f.type) for f in arrow.schema},
            "partition_columns": table.metadata().partition_columns,
            "polars_rows": scanned.height,
            "polars_agrees": sorted(scanned.columns) == sorted(frame.columns)
            and scanned.height == frame.height,
            "files": len(table.file_uris()),
        }
        if name == "runs":
            entry.update(runs_facts(frame))
            if version is not None:
                old = DeltaTable(path, version=version, storage_options=options)
                old_frame = pl.from_arrow(old.to_pyarrow_table())
                result["runs_at_version"] = {
                    "version": old.version(),
                    "rows": old_frame.height,
                    **runs_facts(old_frame),
                }
        result[name] = entry
    print("RESULT " + json.dumps(result, default=str))


if __name__ == "__main__":
    main()
