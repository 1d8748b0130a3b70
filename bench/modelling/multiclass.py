"""Multi-class hetero_lr: every class in one exchange per batch against class after class
(issue #17), alternating the two code versions in one run.

    python bench/modelling/multiclass.py                       # wine (K=3) and digits (K=10)
    python bench/modelling/multiclass.py --datasets wine --key-bits 2048 --rounds 3
    python bench/modelling/multiclass.py --datasets digits --sigmoid taylor   # packed residuals

Each version is a `git archive` of a revision (--old: the commit before the lanes) with this
checkout's built fedcrypto extension copied in; the new version is the old tree with only
hetero_lr's package taken from --new (HEAD), so that other work committed meanwhile (the
envelope, the kit, fedcrypto) does not enter the comparison (--whole-tree: the whole --new).
Every measurement is a fresh Python process whose PYTHONPATH puts that tree's packages first,
running hetero_lr's guest and host in-process (fedflow.standalone.LocalWorld, standardised
columns split vertically, the default sigmoid: separable with one host). Old and new alternate
(A B A B ...). Per run: wall seconds, the guest's train_seconds (training, without key
generation and exchange), CPU seconds of the process (both parties and their background
threads, key generation included), per-iteration messages sent (every one the parties'
protocol guards let out, both parties) and ciphertexts sent, per epoch; train accuracy; and
the two versions' weights, which must agree (1e-6). The load average is recorded before and
after each run (the machine is shared and noisy). Results go to
bench/modelling/multiclass_results.json.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
OLD = "12206ef68b26e22aa7dc595ee65a54b18de158fc"
"""The last commit before multi_class trained every class in one exchange (class after class)."""
PACKAGES = (
    "libs/fedcrypto/src",
    "src",
    "libs/accel/src",
    "services/audit/src",
    "libs/bus/src",
    "libs/common/src",
    "libs/control/src",
    "libs/flow/src",
    "services/gateway/src",
    "services/scheduler/src",
    "schemas/src",
    "services/serving/src",
    "services/worker/src",
)
DATASETS = {
    # name: (guest columns, batch size); the rest of the columns go to the host
    "wine": (7, 89),
    "digits": (32, 256),
}


def tree(rev: str, into: Path) -> Path:
    """`rev`'s source tree in `into`, with this checkout's built fedcrypto extension."""
    into.mkdir(parents=True)
    archive = subprocess.run(
        ["git", "archive", rev, "libs", "schemas", "services", "src"],
        cwd=ROOT,
        check=True,
        capture_output=True,
    ).stdout
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive, check=True)
    for built in (ROOT / "libs/fedcrypto/src/fedcrypto").glob("*.so"):
        shutil.copy2(built, into / "libs/fedcrypto/src/fedcrypto" / built.name)
    return into


PACKAGE = "libs/flow/src/fedflow/components/hetero_lr"


def overlay(base: Path, rev: str, into: Path) -> Path:
    """`base` with hetero_lr's package replaced by `rev`'s."""
    shutil.copytree(base, into, symlinks=True)
    shutil.rmtree(into / PACKAGE)
    archive = subprocess.run(
        ["git", "archive", rev, PACKAGE], cwd=ROOT, check=True, capture_output=True
    ).stdout
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive, check=True)
    return into


def data(name: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits, load_wine

    x, y = (load_wine if name == "wine" else load_digits)(return_X_y=True)
    spread = x.std(axis=0)
    x = (x - x.mean(axis=0)) / np.where(spread > 0, spread, 1.0)
    split = DATASETS[name][0]
    return x[:, :split], x[:, split:], y.astype(np.float64)


def child(args: argparse.Namespace) -> None:
    """One measured run with whatever fedflow PYTHONPATH gives (prints one JSON line)."""
    import logging
    import threading

    import structlog
    from fedflow.metrics import MetricsReader
    from fedflow.protocol import ProtocolGuard
    from fedflow.standalone import LocalWorld
    from fedflow.tables import Table

    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    logging.disable(logging.INFO)
    xg, xh, y = data(args.dataset)
    ids = np.array([f"r{i}" for i in range(len(y))], dtype=np.str_)
    tables = {
        "9999": ("guest", Table(ids, xg, [f"g{i}" for i in range(xg.shape[1])], y, "y")),
        "10000": ("host", Table(ids, xh, [f"h{i}" for i in range(xh.shape[1])], None)),
    }
    params = {
        "multi_class": True,
        "epochs": args.epochs,
        "batch_size": DATASETS[args.dataset][1],
        "learning_rate": 0.5,
        "alpha": 0.01,
        "seed": 2,
        "early_stop": False,
        "sigmoid": args.sigmoid,
        "key_bits": args.key_bits,
        "insecure_short_keys": args.key_bits < 2048,
    }
    sent = {"messages": 0, "ciphertexts": 0}
    lock = threading.Lock()
    original = ProtocolGuard.check_send

    def counting(self: ProtocolGuard, payload: Any, **kwargs: Any) -> Any:
        rule = original(self, payload, **kwargs)
        if kwargs["iteration"] < 0:  # the key exchange: once per run, not per epoch
            return rule
        with lock:
            sent["messages"] += 1
            if payload.kind == "ciphertext_vector" and payload.array is not None:
                sent["ciphertexts"] += int(payload.array.shape[0])
        return rule

    ProtocolGuard.check_send = counting  # type: ignore[method-assign]
    parties = {"guest": ["9999"], "host": ["10000"]}
    with tempfile.TemporaryDirectory() as folder, LocalWorld(list(tables), Path(folder)) as world:
        specs = {}
        for party, (role, table) in tables.items():
            world.parties[party].runtime.artifacts.put("job", "src", party, role, "data", table, 0)
            specs[party] = world.parties[party].task(
                "job",
                "lr_0",
                "hetero_lr",
                role,
                parties,
                params=params,
                inputs={"data": "src.data"},
            )
        errors: list[BaseException] = []

        def run(party: str) -> None:
            try:
                world.parties[party].runtime.run_task(
                    specs[party], cancel=threading.Event(), recv_timeout=600
                )
            except BaseException as exc:
                errors.append(exc)

        began, cpu = time.perf_counter(), time.process_time()
        threads = [threading.Thread(target=run, args=(p,)) for p in tables]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        wall, cpu = time.perf_counter() - began, time.process_time() - cpu
        if errors:
            raise errors[0]
        metrics = MetricsReader(world.parties["9999"].engine).metrics("job", "lr_0")
        train = next(m.value for m in metrics if m.name == "train_seconds")
        wg = world.parties["9999"].runtime.artifacts.get("job", "9999", "guest", "lr_0.model")
        wh = world.parties["10000"].runtime.artifacts.get("job", "10000", "host", "lr_0.model")
    z = np.hstack([xg, np.ones((len(y), 1))]) @ wg.features + xh @ wh.features
    print(
        json.dumps(
            {
                "wall_s": wall,
                "train_s": train,
                "cpu_s": cpu,
                "messages": sent["messages"],
                "ciphertexts": sent["ciphertexts"],
                "accuracy": float(np.mean(np.argmax(z, axis=1) == y)),
                "guest_weights": wg.features.tolist(),
                "host_weights": wh.features.tolist(),
            }
        )
    )


def measure(source: Path, dataset: str, args: argparse.Namespace) -> dict[str, Any]:
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(str(source / p) for p in PACKAGES),
        "OMP_NUM_THREADS": "1",
    }
    command = [
        sys.executable,
        __file__,
        "--child",
        "--dataset",
        dataset,
        "--epochs",
        str(args.epochs),
        "--key-bits",
        str(args.key_bits),
        "--sigmoid",
        args.sigmoid,
    ]
    load_before = os.getloadavg()[0]
    done = subprocess.run(command, env=env, check=True, capture_output=True, text=True)
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    result["load"] = [load_before, os.getloadavg()[0]]
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--dataset", default="wine", help=argparse.SUPPRESS)
    parser.add_argument("--datasets", default="wine,digits")
    parser.add_argument("--old", default=OLD)
    parser.add_argument("--new", default="HEAD")
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--key-bits", type=int, default=1024)
    parser.add_argument(
        "--sigmoid",
        default="auto",
        help="hetero_lr's sigmoid: auto (separable with one host), taylor (packs the classes' "
        "residuals since the packing commit), separable",
    )
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--whole-tree", action="store_true", help="new: all of --new's tree")
    parser.add_argument("--out", default=str(ROOT / "bench/modelling/multiclass_results.json"))
    args = parser.parse_args()
    if args.child:
        child(args)
        return
    revs = {
        "old": subprocess.run(
            ["git", "rev-parse", args.old], cwd=ROOT, check=True, capture_output=True, text=True
        ).stdout.strip(),
        "new": subprocess.run(
            ["git", "rev-parse", args.new], cwd=ROOT, check=True, capture_output=True, text=True
        ).stdout.strip(),
    }
    report: dict[str, Any] = {
        "revisions": revs,
        "key_bits": args.key_bits,
        "sigmoid": args.sigmoid,
        "epochs": args.epochs,
        "new_tree": "whole" if args.whole_tree else "old tree + new hetero_lr package",
        "runs": [],
    }
    with tempfile.TemporaryDirectory() as folder:
        old = tree(revs["old"], Path(folder) / "old")
        if args.whole_tree:
            new = tree(revs["new"], Path(folder) / "new")
        else:
            new = overlay(old, revs["new"], Path(folder) / "new")
        sources = {"old": old, "new": new}
        for dataset in args.datasets.split(","):
            for round_ in range(args.rounds):
                for version in ("old", "new"):  # alternating: A B A B
                    result = measure(sources[version], dataset, args)
                    result.update(dataset=dataset, version=version, round=round_)
                    report["runs"].append(result)
                    print(
                        f"{dataset:6s} {version} round {round_}: "
                        f"{result['wall_s']:7.1f} s wall ({result['train_s']:7.1f} training) "
                        f"{result['cpu_s']:7.1f} CPU-s "
                        f"{result['messages'] / args.epochs:7.0f} messages/epoch "
                        f"{result['ciphertexts'] / args.epochs:9.0f} ciphertexts/epoch "
                        f"accuracy {result['accuracy']:.4f} load {result['load'][0]:.1f}"
                        f"-{result['load'][1]:.1f}",
                        flush=True,
                    )
    for dataset in args.datasets.split(","):
        runs = [r for r in report["runs"] if r["dataset"] == dataset]
        old = [r for r in runs if r["version"] == "old"]
        new = [r for r in runs if r["version"] == "new"]
        for a, b in zip(old, new, strict=True):
            for side in ("guest_weights", "host_weights"):
                gap = np.max(np.abs(np.array(a[side]) - np.array(b[side])))
                assert gap < 1e-6, f"{dataset}: old and new {side} differ by {gap}"
        ratio = {
            key: float(np.median([r[key] for r in old]) / np.median([r[key] for r in new]))
            for key in ("wall_s", "train_s", "cpu_s", "messages", "ciphertexts")
        }
        report.setdefault("summary", {})[dataset] = ratio
        print(
            f"{dataset}: old/new (medians) wall {ratio['wall_s']:.2f}x, training "
            f"{ratio['train_s']:.2f}x, CPU {ratio['cpu_s']:.2f}x, "
            f"messages {ratio['messages']:.1f}x, ciphertexts {ratio['ciphertexts']:.2f}x; "
            "weights equal (1e-6)"
        )
    for run in report["runs"]:
        del run["guest_weights"], run["host_weights"]
    Path(args.out).write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
