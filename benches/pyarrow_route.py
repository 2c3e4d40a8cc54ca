"""The hand-written Python route the performance issue compares against, for `benches/e2e.rs`.

Fetches every URL in a file (16 threads, `urllib`), flattens each run into the same three
tables with the same columns the exporter writes (runs, node_outputs, run_inputs: ids, status,
timestamps as UTC microseconds, durations, JSON values as text, the run's start time on child
rows), and writes them with pyarrow as zstd Parquet with dictionaries and default row groups
(one row group per table, as it holds everything in memory). Prints one line: `PYARROW <seconds> <parquet bytes> <runs>`.

Usage: python pyarrow_route.py URLS_FILE KEY OUT_DIR
"""

import json
import sys
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime

import pyarrow as pa
import pyarrow.parquet as pq


def fetch(url, key):
    request = urllib.request.Request(url, headers={"Authorization": f"Bearer {key}"})
    with urllib.request.urlopen(request) as response:
        return url, response.read()


def micros(text):
    if not isinstance(text, str):
        return None
    try:
        return int(datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp() * 1_000_000)
    except ValueError:
        return None


def as_text(value):
    if value is None:
        return None
    if isinstance(value, str):
        return value
    return json.dumps(value, separators=(",", ":"))


def main():
    urls_file, key, out = sys.argv[1], sys.argv[2], sys.argv[3]
    urls = [u for u in open(urls_file).read().split() if "/runs?" in u]
    started = time.monotonic()
    extracted_at = int(time.time() * 1_000_000)
    runs = {k: [] for k in ["workflow_id", "run_id", "status", "start_time", "end_time",
                            "elapsed_time", "duration_ms", "error", "outputs", "node_count",
                            "inputs", "extracted_at"]}
    nodes = {k: [] for k in ["workflow_id", "run_id", "start_time", "node", "node_index",
                             "value_type", "value"]}
    inputs = {k: [] for k in ["workflow_id", "run_id", "start_time", "name", "value_type",
                              "value"]}
    seen = set()
    with ThreadPoolExecutor(16) as pool:
        for url, body in pool.map(lambda u: fetch(u, key), urls):
            workflow = url.split("/workflows/")[1].split("/")[0]
            for record in json.loads(body):
                run_id = record.get("id")
                if run_id is None or (workflow, run_id) in seen:
                    continue
                seen.add((workflow, run_id))
                runs["workflow_id"].append(workflow)
                runs["run_id"].append(str(run_id))
                runs["status"].append(as_text(record.get("status")))
                start, end = micros(record.get("start_time")), micros(record.get("end_time"))
                runs["start_time"].append(start)
                runs["end_time"].append(end)
                elapsed = record.get("elapsed_time")
                runs["elapsed_time"].append(int(elapsed) if isinstance(elapsed, (int, float)) else None)
                runs["duration_ms"].append(
                    (end - start) // 1000 if start is not None and end is not None else None)
                runs["error"].append(as_text(record.get("error")))
                runs["outputs"].append(as_text(record.get("outputs")))
                all_outputs = record.get("all_outputs")
                runs["node_count"].append(len(all_outputs) if isinstance(all_outputs, dict) else 0)
                runs["inputs"].append(as_text(record.get("inputs")))
                runs["extracted_at"].append(extracted_at)
                for table, field, name in ((nodes, "all_outputs", "node"), (inputs, "inputs", "name")):
                    entries = record.get(field)
                    if not isinstance(entries, dict):
                        continue
                    for i, (entry, value) in enumerate(entries.items()):
                        table["workflow_id"].append(workflow)
                        table["run_id"].append(str(run_id))
                        table["start_time"].append(start)
                        table[name].append(entry)
                        if "node_index" in table:
                            table["node_index"].append(i)
                        table["value_type"].append(type(value).__name__)
                        table["value"].append(as_text(value))
    timestamp = pa.timestamp("us", tz="UTC")
    schemas = {
        "runs": {"start_time": timestamp, "end_time": timestamp, "elapsed_time": pa.int64(),
                 "duration_ms": pa.int64(), "node_count": pa.int32(), "extracted_at": timestamp},
        "node_outputs": {"start_time": timestamp, "node_index": pa.int32()},
        "run_inputs": {"start_time": timestamp},
    }
    total = 0
    for name, columns in (("runs", runs), ("node_outputs", nodes), ("run_inputs", inputs)):
        types = schemas[name]
        table = pa.table({k: pa.array(v, type=types.get(k, pa.string())) for k, v in columns.items()})
        path = f"{out}/{name}.parquet"
        pq.write_table(table, path, compression="zstd")
        total += pa.OSFile(path).size()
    print(f"PYARROW {time.monotonic() - started:.3f} {total} {len(runs['run_id'])}")


if __name__ == "__main__":
    main()
