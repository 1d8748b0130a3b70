#!/usr/bin/env bash
# Old against new hetero_secureboost, alternating in one window (docs/benchmarks.md):
#   bench/secureboost/ab.sh OLD_COMMIT [PAIRS] [run.py arguments...]
#   bench/secureboost/ab.sh ee2934f 3 --depths 3 --trees 2
# The libs of OLD_COMMIT and of HEAD (git worktrees in a temporary folder, so edits in this
# checkout do not reach a run) each go on PYTHONPATH for this checkout's run.py in turn, old
# first; every run is appended to bench/secureboost/ab_<old>_results.json tagged old or new
# (run.py records the load average before and after).
set -euo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
old="$1"; pairs="${2:-3}"; shift $(( $# >= 2 ? 2 : 1 ))
args=("$@"); [ ${#args[@]} -eq 0 ] && args=(--depths 3 --trees 2)
work="$(mktemp -d)"
git -C "$root" worktree add --detach "$work/old" "$old" >/dev/null
git -C "$root" worktree add --detach "$work/new" HEAD >/dev/null
# fedcrypto's C extension is a build output git does not track: without it every run would
# fall back to gmpy2 (run.py reports native_kernels). Both sides get this checkout's build.
for code in old new; do
  cp "$root"/libs/fedcrypto/src/fedcrypto/_native*.so "$work/$code/libs/fedcrypto/src/fedcrypto/"
done
trap 'git -C "$root" worktree remove --force "$work/old"; git -C "$root" worktree remove --force "$work/new"' EXIT
out="$root/bench/secureboost/ab_$(git -C "$root" rev-parse --short "$old")_results.json"
for i in $(seq "$pairs"); do
  for code in old new; do
    pp="$(ls -d "$work/$code"/libs/*/src | tr '\n' ':')"
    echo "pair $i $code $(date -u +%H:%M:%S) $(uptime)"
    PYTHONPATH="$pp" python "$root/bench/secureboost/run.py" "${args[@]}" \
      --out "$work/run_${i}_$code.json" > "$work/log_${i}_$code.txt"
    python - "$out" "$work/run_${i}_$code.json" "$code" "$i" "$(git -C "$work/$code" rev-parse --short HEAD)" <<'PY'
import json, sys
from pathlib import Path
out, report = Path(sys.argv[1]), json.loads(Path(sys.argv[2]).read_text())
code, pair, commit = sys.argv[3], int(sys.argv[4]), sys.argv[5]
previous = json.loads(out.read_text()) if out.exists() else []
for run in report["runs"]:
    assert report["machine"]["native_kernels"], "fedcrypto's C extension did not load"
    run.update(code=code, commit=commit, pair=pair)
    previous.append(run)
    print(f"  {code} {commit}: {run['seconds_per_tree']} s/tree, pipeline CPU "
          f"{run['pipeline_cpu_seconds']} s, load {run['load_before'][0]} -> "
          f"{run['load_after'][0]}, AUC {run['auc']} (= reference: {run['auc_equals_reference']})")
out.write_text(json.dumps(previous, indent=2) + "\n")
PY
  done
done
