"""Upload parsing benchmark (issue #21, item 5): peak memory and time of storing a large CSV
table, the streaming import (fedflow.csv_import, what the data service uses now) against the
whole-file parse it replaced (fedflow.tables.read_table + Table.to_bytes, what
TableStore.upload did), in one run on the same file.

    python bench/uploads/run.py                  # a 200 MB CSV (30 features, labels 0/1)
    python bench/uploads/run.py --mb 50

Each path runs in a fresh child process (`python bench/uploads/run.py --child PATH`), which
reports its peak resident memory (VmHWM from /proc) and its resident memory after its imports
(the interpreter, numpy and fedflow: the part no parse can avoid), and the seconds it took. The
CSV is generated first (a block of random values repeated under fresh ids). Results go to
bench/uploads/results.json; the machine's load average is recorded before and after.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

RESULTS = Path(__file__).with_name("results.json")
FEATURES = 30


def rss(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"no {field} in /proc/self/status")


def make_csv(path: Path, megabytes: int) -> int:
    import numpy as np

    rng = np.random.default_rng(21)
    block = [",".join(f"{v:.9f}" for v in row) for row in rng.normal(size=(1000, FEATURES))]
    header = "id,y," + ",".join(f"x{i}" for i in range(FEATURES)) + "\n"
    target = megabytes << 20
    rows = 0
    with path.open("w") as out:
        out.write(header)
        written = len(header)
        while written < target:
            lines = [f"row{rows + i},{(rows + i) % 2},{block[i % 1000]}\n" for i in range(10_000)]
            chunk = "".join(lines)
            out.write(chunk)
            written += len(chunk)
            rows += 10_000
    return rows


def child(mode: str, csv: Path) -> None:
    from fedflow.csv_import import import_csv
    from fedflow.tables import read_table

    base = rss("VmRSS")
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(dir=csv.parent) as tmp:
        target = Path(tmp) / "table.npz"
        if mode == "streaming":
            rows = import_csv(csv, target, label_column="y", require_label=True).rows
        else:
            table = read_table(csv, label_column="y", require_label=True)
            target.write_bytes(table.to_bytes())
            rows = table.rows
    seconds = time.perf_counter() - started
    print(json.dumps({"rows": rows, "seconds": seconds, "peak": rss("VmHWM"), "base": base}))


def measure(mode: str, csv: Path) -> dict[str, float]:
    done = subprocess.run(
        [sys.executable, __file__, "--child", mode, str(csv)],
        capture_output=True,
        text=True,
        check=True,
    )
    result: dict[str, float] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--mb", type=int, default=200)
    parser.add_argument("--child", nargs=2, metavar=("MODE", "CSV"))
    args = parser.parse_args()
    if args.child:
        child(args.child[0], Path(args.child[1]))
        return
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory() as tmp:
        csv = Path(tmp) / "big.csv"
        rows = make_csv(csv, args.mb)
        size = csv.stat().st_size
        print(f"CSV: {size / 1e6:.1f} MB, {rows} rows x {FEATURES} features", flush=True)
        results: dict[str, object] = {"csv_bytes": size, "rows": rows, "features": FEATURES}
        for mode in ("whole_file", "streaming"):
            measured = measure(mode, csv)
            grown = measured["peak"] - measured["base"]
            print(
                f"{mode:>10}: peak RSS {measured['peak'] / 2**20:7.0f} MiB "
                f"(+{grown / 2**20:.0f} MiB over the {measured['base'] / 2**20:.0f} MiB after "
                f"imports; {grown / size:.2f} x the file), {measured['seconds']:.1f} s",
                flush=True,
            )
            results[mode] = measured
    whole, stream = results["whole_file"], results["streaming"]
    assert isinstance(whole, dict) and isinstance(stream, dict)
    ratio = (whole["peak"] - whole["base"]) / max(1.0, stream["peak"] - stream["base"])
    print(f"growth ratio whole-file / streaming: {ratio:.1f}x")
    results["load_before"] = load_before
    results["load_after"] = os.getloadavg()
    RESULTS.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
