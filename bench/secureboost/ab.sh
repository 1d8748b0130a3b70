#!/usr/bin/env bash
# Old against new hetero_secureboost, alternating in one window (docs/benchmarks.md):
#   bench/secureboost/ab.sh OLD_COMMIT [PAIRS] [run.py arguments...]
#   bench/secureboost/ab.sh ee2934f 3 --depths 3 --trees 2
# OLD_COMMIT's libs (git worktree in a temporary folder) against this checkout's, each run
# through this checkout's run.py with PYTHONPATH set to one tree's libs; results go to
# bench/secureboost/ab_<old>_results.json, one entry per run, tagged old or new, with uptime.
set -euo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
old="$1"; pairs="${2:-3}"; shift $(( $# >= 2 ? 2 : 1 ))
args=("$@"); [ ${#args[@]} -eq 0 ] && args=(--depths 3 --trees 2)
tree="$(mktemp -d)/old"
git -C "$root" worktree add --detach "$tree" "$old" >/dev/null
trap 'git -C "$root" worktree remove --force "$tree"' EXIT
paths() { ls -d "$1"/libs/*/src | tr '\n' ':'; }
out="$root/bench/secureboost/ab_$(git -C "$root" rev-parse --short "$old")_results.json"
for i in $(seq "$pairs"); do
  for code in old new; do
    if [ "$code" = old ]; then pp="$(paths "$tree")"; else pp="$(paths "$root")"; fi
    echo "pair $i $code $(date -u +%H:%M:%S) $(uptime)"
    PYTHONPATH="$pp" python "$root/bench/secureboost/run.py" "${args[@]}" \
      --out "$tree/../run_${i}_$code.json" > "$tree/../log_${i}_$code.txt"
    python - "$out" "$tree/../run_${i}_$code.json" "$code" "$i" <<'PY'
import json, sys
from pathlib import Path
out, got, code, pair = Path(sys.argv[1]), json.loads(Path(sys.argv[2]).read_text()), sys.argv[3], int(sys.argv[4])
runs = got["runs"] if isinstance(got, dict) and "runs" in got else got
previous = json.loads(out.read_text()) if out.exists() else []
for run in runs if isinstance(runs, list) else [runs]:
    run.update(code=code, pair=pair)
    previous.append(run)
    print(f"  {code}: {run['seconds_per_tree']} s/tree, cpu {run['pipeline_cpu_seconds']}, "
          f"load {run['load_before'][0]} -> {run['load_after'][0]}, auc {run['auc']}")
out.write_text(json.dumps(previous, indent=2) + "\n")
PY
  done
done
