#!/usr/bin/env bash
# Old code against this tree's, alternating in one session: bench/wan/run.py run with the
# fedschemas and fedgateway packages of git revision OLD (put first on PYTHONPATH; every other
# package, fedcrypto's built extension included, is this checkout's, so both sides run the same
# native code), then with this tree's, PAIRS times (old, new, old, new, ...). Each run measures
# its own CUBIC baseline. JSON results go to OUTDIR/{old,new}_<i>.json.
# AB_SWAP: the source folders taken from OLD, space-separated (default: fedschemas and
# fedgateway; ab_bus.sh adds fedbus).
#
#   sudo bench/wan/ab.sh 724f544 3 /tmp/wan-ab --points 80:1 --rows gateway --size-mib 1024
set -euo pipefail
old_rev=$1 pairs=$2 outdir=$3
shift 3
repo=$(cd "$(dirname "$0")/../.." && pwd)
py=$repo/.venv/bin/python
mkdir -p "$outdir"
old_tree=$(mktemp -d)
trap 'rm -rf "$old_tree"' EXIT
git -C "$repo" archive "$old_rev" | tar -x -C "$old_tree"
old_path=
for src in ${AB_SWAP:-schemas/src services/gateway/src}; do
  old_path=${old_path:+$old_path:}$old_tree/$src
done
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
