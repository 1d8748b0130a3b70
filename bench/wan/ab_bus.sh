#!/usr/bin/env bash
# Like ab.sh, with fedbus swapped too: bench/wan/run.py run with the fedbus, fedschemas and
# fedgateway packages of git revision OLD (put first on PYTHONPATH; every other package is this
# checkout's), then with this tree's, PAIRS times (old, new, old, new, ...). Each run measures
# its own CUBIC baseline. JSON results go to OUTDIR/{old,new}_<i>.json. For changes to the bus
# (issue #19, fourth session part 2: complete chunk sets handed to the relay's batch handler).
#
#   bench/wan/ab_bus.sh adc9ea6 2 /tmp/wan-ab-bus --points 80:1 --rows gateway --size-mib 1024
set -euo pipefail
old_rev=$1 pairs=$2 outdir=$3
shift 3
repo=$(cd "$(dirname "$0")/../.." && pwd)
py=$repo/.venv/bin/python
mkdir -p "$outdir"
old_tree=$(mktemp -d)
trap 'rm -rf "$old_tree"' EXIT
git -C "$repo" archive "$old_rev" | tar -x -C "$old_tree"
old_path=$old_tree/libs/bus/src:$old_tree/schemas/src:$old_tree/services/gateway/src
for i in $(seq 1 "$pairs"); do
  for side in old new; do
    echo "== $side $i: $(date -u +%H:%M:%S) load $(cut -d' ' -f1-3 /proc/loadavg)"
    if [ "$side" = old ]; then
      (cd "$old_tree" && PYTHONPATH=$old_path "$py" bench/wan/run.py "$@" --out "$outdir/old_$i.json") \
        | grep '^{' || true
    else
      (cd "$repo" && "$py" bench/wan/run.py "$@" --out "$outdir/new_$i.json") | grep '^{' || true
    fi
  done
done
