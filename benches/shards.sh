#!/usr/bin/env bash
# The scale story: N shard exports at once into one dataset, against the simulator.
#
#   benches/shards.sh [SHARDS] [WORKFLOWS] [RUNS_PER_WORKFLOW] [OUT]
#   (defaults: 8 shards, 400 workflows × 12,500 runs = 5M runs, /tmp/orchestra-shards;
#   DATA=llm for the LLM-heavy profile, small by default)
#
# Builds the release binary, starts `simulate` in its own process, starts every shard at once
# (as a Kubernetes Indexed Job would), waits, then prints the total and per-shard wall time and
# peak RSS, and the dataset's size and file counts. Checks the union with DuckDB when the venv
# (ORCHESTRA_EXPORT_PYTHON) has it.
set -euo pipefail
cd "$(dirname "$0")/.."
shards=${1:-8}
workflows=${2:-400}
runs=${3:-12500}
out=${4:-/tmp/orchestra-shards}
port=${PORT:-8913}
cargo build --release --quiet
bin="${CARGO_TARGET_DIR:-target}/release/orchestra-export"
logs=$(mktemp -d)
rm -rf "$out"
ORCHESTRA_API_KEY=bench "$bin" simulate --listen "127.0.0.1:$port" --workflows "$workflows" \
  --runs "$runs" --data "${DATA:-small}" --no-progress >"$logs/sim.log" 2>&1 &
sim=$!
trap 'kill $sim 2>/dev/null || true' EXIT
for _ in $(seq 50); do
  curl -sf -o /dev/null -H "Authorization: Bearer bench" "http://127.0.0.1:$port/api/v1/workflow/workflows" && break
  sleep 0.2
done
start=$(date +%s.%N)
pids=()
for ((k = 0; k < shards; k++)); do
  ORCHESTRA_API_KEY=bench /usr/bin/time -f "shard $k/$shards: %e s wall, %M KB peak RSS" \
    "$bin" export --base-url "http://127.0.0.1:$port/api/v1/workflow" --all-workflows \
    --shard "$k/$shards" --no-progress --out "$out" >"$logs/shard-$k.out" 2>"$logs/shard-$k.err" &
  pids+=($!)
done
status=0
for pid in "${pids[@]}"; do wait "$pid" || status=1; done
end=$(date +%s.%N)
echo "$((workflows * runs)) runs, $shards shards at once: $(printf "%.1f" "$(echo "$end - $start" | bc)") s total"
for ((k = 0; k < shards; k++)); do
  tail -n 1 "$logs/shard-$k.err"
  grep -h "runs, " "$logs/shard-$k.out" | sed 's/^ */  /'
done
echo "dataset: $(du -sb "$out" | cut -f1) bytes, $(find "$out" -type f | wc -l) files, $(find "$out" -name '*.parquet' | wc -l) Parquet files"
for t in runs node_outputs run_inputs; do
  echo "  $t: $(find "$out/$t" -name '*.parquet' | wc -l) files, $(find "$out/$t" -name '*.parquet' -printf '%s\n' | awk '{s+=$1} END {print s}') bytes"
done
python=${ORCHESTRA_EXPORT_PYTHON:-.venv/bin/python}
if [ -x "$python" ] && "$python" -c "import duckdb" 2>/dev/null; then
  "$python" -c "
import duckdb, sys
rows, keys = duckdb.sql(\"select count(*), count(distinct (workflow_id, run_id)) from read_parquet('$out/runs/**/*.parquet', hive_partitioning = true)\").fetchall()[0]
print(f'DuckDB over the union: {rows} runs, {keys} distinct keys')
sys.exit(0 if rows == keys == $((workflows * runs)) else 1)
" || status=1
fi
[ "$status" = 0 ] || { echo "error: a shard failed or the union is not exact; logs in $logs" >&2; exit 1; }
rm -rf "$logs"
