"""homo_lr / homo_nn's round cost: secure aggregation against plain FedAvg, same run.

    .venv/bin/python bench/homo/run.py [--features 99 --hidden 1000 --rows 2000]
                                       [--clients 3,10] [--repeat 3]

One round of a homo_nn network with about 100,000 parameters (99 features, 1000 hidden units:
101,001) for n clients, in this process. Each client first trains one epoch of local SGD
(batch 32) on its own `--rows` synthetic rows, timed once per n and added to every way below
(the same work with or without secure aggregation). Then every message homo_lr sends is built
as on the wire (homo_lr.wire's FederationData in a fedschemas envelope, encoded) and decoded at
its receiver, and the aggregator's arithmetic runs as in the component. Three ways, same run:

  plain     FedAvg without secure aggregation: each client sends its float64 contribution
            (homo_lr.math.contribution, d + 2 values), the aggregator sums them
  secagg    homo_lr's round: fedcrypto.secagg (keys, encrypted shares, masked input mod 2^64,
            unmasking), every client in
  dropout   the same with a third of the clients (floor n / 3) leaving after sharing their keys:
            the aggregator recovers their pairwise masks from the others' shares
  --robust  instead of dropout: median, trimmed_mean, krum, fedavg_clipped, each client's
            update in the clear (plain_update) and math.combine_plain at the aggregator
            (results_robust.json)

Reported per way: the slowest client's training, the clients' protocol compute (their own
steps; clients run in parallel in a real job), the aggregator's compute, the protocol's
critical path (slowest client + aggregator), the round (max over clients of training + own
protocol steps, + the aggregator; no network), and the bytes each client sends per round
(encoded envelopes, before signing and TLS) against the plain update. Bonawitz et al. report a
1.73x expansion for 2^10 clients and 2^20 16-bit values; homo_lr masks 64-bit fixed point, as
wide as the plain float64 update, so its expansion is only the key and share messages.
Results: bench/homo/results.json (docs/benchmarks.md by hand, with the load average).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
from fedcrypto.secagg import SecAggClient, SecAggConfig, SecAggServer
from fedflow.components.homo_lr import math as hmath
from fedflow.components.homo_lr import wire
from fedflow.components.homo_nn import math as nmath
from fedschemas import FederationData, PartyRef, decode_envelope, decode_payload, new_envelope
from fedschemas.envelope import encode_envelope

T = TypeVar("T")
AGG = PartyRef(party_id="9999", role="guest")


def wire_trip(
    payload: FederationData, tag: str, frm: int, to: int, counter: dict[str, int]
) -> FederationData:
    """`payload` encoded in an envelope as it crosses, decoded at the receiver; its bytes
    counted against the sender (frm, 0 = the aggregator) and the receiver."""
    src = AGG if frm == 0 else PartyRef(party_id=str(10000 + frm), role="host")
    dst = AGG if to == 0 else PartyRef(party_id=str(10000 + to), role="host")
    envelope = new_envelope(
        payload,
        job_id="bench-homo",
        component="homo_lr_0",
        task_id="bench-homo/homo_lr_0",
        attempt=0,
        source=src,
        destination=dst,
        tag=tag,
        iteration=0,
        seq=0,
        created_at=datetime.now(UTC),
    )
    raw = encode_envelope(envelope, max_bytes=1 << 30)
    if frm:
        counter[f"sent_{frm}"] = counter.get(f"sent_{frm}", 0) + len(raw)
    if to:
        counter[f"received_{to}"] = counter.get(f"received_{to}", 0) + len(raw)
    return decode_payload(decode_envelope(raw, max_bytes=1 << 30), FederationData)


class Clock:
    """Seconds spent per actor (0: the aggregator, u: client u)."""

    def __init__(self) -> None:
        self.spent: dict[int, float] = {}

    def run(self, actor: int, fn: Callable[[], T]) -> T:
        start = time.perf_counter()
        out = fn()
        self.spent[actor] = self.spent.get(actor, 0.0) + time.perf_counter() - start
        return out


Trained = tuple[dict[int, hmath.Floats], dict[int, float]]


def local_training(n: int, features: int, hidden: int, rows: int) -> Trained:
    """Each client's contribution after one epoch of homo_nn's local SGD (batch 32) on its own
    `rows` synthetic rows, and the seconds that took (the same with or without secure
    aggregation: measured once, added to every way's round)."""
    w = nmath.initial(features, hidden, seed=0)
    training = hmath.LocalTraining(1, 32, 0.05, 0.0, 0)
    xs, seconds = {}, {}
    for u in range(1, n + 1):
        rng = np.random.default_rng(u)
        x1 = hmath.with_intercept(rng.normal(size=(rows, features)))
        y = (x1[:, 0] + rng.normal(size=rows) > 0).astype(np.float64)
        start = time.perf_counter()
        local = nmath.local_sgd(w, x1, y, training, (0, 0, u), hidden)
        loss = nmath.log_loss(w, x1, y, hidden)
        seconds[u] = time.perf_counter() - start
        xs[u] = hmath.contribution(w, local, loss, rows)
    return xs, seconds


def plain_round(n: int, trained: Trained) -> tuple[Clock, dict[str, int], hmath.Floats]:
    clock, counter = Clock(), {}
    xs = trained[0]
    params = next(iter(xs.values())).shape[0] - hmath.EXTRA
    total = np.zeros(params + hmath.EXTRA)
    for u, x in xs.items():
        payload = clock.run(u, lambda x=x: FederationData(kind="aggregate", array=x))
        got = clock.run(0, lambda u=u, p=payload: wire_trip(p, "update", u, 0, counter))
        clock.run(0, lambda g=got: total.__iadd__(np.asarray(g.array)))
    w = np.zeros(params)
    model = clock.run(0, lambda: hmath.apply_sum(w, total)[0])
    for u in xs:  # the next global model goes back to each client
        clock.run(
            u,
            lambda u=u: wire_trip(
                FederationData(kind="aggregate", array=model), "global_model", 0, u, counter
            ),
        )
    return clock, counter, total


def robust_round(n: int, trained: Trained, rule: str) -> tuple[Clock, dict[str, int], hmath.Floats]:
    """homo_lr's round without secure aggregation under a robust `rule` (aggregation median,
    trimmed_mean, krum, fedavg_clipped): each client's contribution in the clear
    (`plain_update`), the aggregator's check and math.combine_plain (server clipping at 1.0,
    trim_fraction 0.2, krum f = 1; 0 below 5 clients)."""
    clock, counter = Clock(), {}
    xs = trained[0]
    params = next(iter(xs.values())).shape[0] - hmath.EXTRA
    got: dict[int, hmath.Floats] = {}
    for u, x in xs.items():
        payload = clock.run(u, lambda x=x: wire.plain_update_payload(x))
        arrived = clock.run(0, lambda u=u, p=payload: wire_trip(p, "plain_update", u, 0, counter))
        vector = np.asarray(arrived.array, dtype=np.float64)
        assert clock.run(0, lambda v=vector: hmath.update_problem(v, params + hmath.EXTRA)) is None
        got[u] = vector
    clip = 1.0 if rule == "fedavg_clipped" else None
    out = clock.run(
        0,
        lambda: hmath.combine_plain(
            rule, got, params, clip=clip, trim_fraction=0.2, byzantine=1 if n >= 5 else 0
        ),
    )
    model = np.zeros(params) + out.delta
    for u in xs:
        clock.run(
            u,
            lambda u=u: wire_trip(
                FederationData(kind="aggregate", array=model), "global_model", 0, u, counter
            ),
        )
    return clock, counter, out.delta


def secure_round(n: int, trained: Trained, drop: int) -> tuple[Clock, dict[str, int], hmath.Floats]:
    """One homo_lr round over fedcrypto.secagg; clients n - drop + 1 .. n leave after their
    shares (before their masked input)."""
    clock, counter = Clock(), {}
    xs = trained[0]
    params = next(iter(xs.values())).shape[0] - hmath.EXTRA
    config = SecAggConfig(
        session=b"bench",
        num_clients=n,
        vector_length=params + hmath.EXTRA,
        modulus_bits=64,
        clip=16,
    )
    server = SecAggServer(config)
    clients = {u: clock.run(u, lambda u=u: SecAggClient(u, config)) for u in xs}
    staying = [u for u in xs if u <= n - drop]
    w = np.zeros(params)
    for u in xs:  # the global model, as in the plain round
        clock.run(
            u,
            lambda u=u: wire_trip(
                FederationData(kind="aggregate", array=w), "global_model", 0, u, counter
            ),
        )
    for u, c in clients.items():
        p = clock.run(u, lambda c=c: wire.keys_payload(c.advertise_keys()))
        got = clock.run(0, lambda u=u, p=p: wire_trip(p, "sa_keys", u, 0, counter))
        clock.run(0, lambda u=u, g=got: server.receive_keys(wire.read_keys(u, g)))
    directory = clock.run(0, lambda: wire.directory_payload(server.key_directory()))
    for u, c in clients.items():
        got = clock.run(u, lambda u=u: wire_trip(directory, "sa_directory", 0, u, counter))
        p = clock.run(
            u, lambda c=c, g=got: wire.shares_payload(c.share_keys(wire.read_directory(g)))
        )
        got = clock.run(0, lambda u=u, p=p: wire_trip(p, "sa_shares", u, 0, counter))
        clock.run(0, lambda u=u, g=got: server.receive_shares(wire.read_shares(u, g)))
    routed = clock.run(0, server.route_shares)
    for u in staying:
        p = clock.run(0, lambda u=u: wire.shares_payload(routed[u]))
        got = clock.run(u, lambda u=u, p=p: wire_trip(p, "sa_routed", 0, u, counter))
        masked = clock.run(
            u,
            lambda u=u, g=got: wire.masked_payload(
                clients[u].masked_input(wire.read_routed(u, g), xs[u])
            ),
        )
        got = clock.run(0, lambda u=u, p=masked: wire_trip(p, "sa_masked", u, 0, counter))
        clock.run(0, lambda u=u, g=got: server.receive_masked_input(wire.read_masked(u, g)))
    request = clock.run(0, server.unmask_request)
    payload = wire.unmask_request_payload(request)
    for u in staying:
        got = clock.run(u, lambda u=u: wire_trip(payload, "sa_unmask", 0, u, counter))
        p = clock.run(
            u,
            lambda u=u, g=got: wire.unmask_payload(clients[u].unmask(wire.read_unmask_request(g))),
        )
        got = clock.run(0, lambda u=u, p=p: wire_trip(p, "sa_unmask_shares", u, 0, counter))
        clock.run(0, lambda u=u, g=got: server.receive_unmasking(wire.read_unmask(u, g)))
    result = clock.run(0, server.result)
    clock.run(0, lambda: hmath.apply_sum(w, result.sum))
    expected = sum(xs[u] for u in staying)
    assert np.allclose(result.sum, expected, atol=1e-9), "the secure sum is wrong"
    return clock, counter, result.sum


def summarise(clock: Clock, counter: dict[str, int], n: int, train: dict[int, float]) -> Row:
    clients = [clock.spent.get(u, 0.0) for u in range(1, n + 1)]
    sent = [counter.get(f"sent_{u}", 0) for u in range(1, n + 1)]
    received = [counter.get(f"received_{u}", 0) for u in range(1, n + 1)]
    aggregator = clock.spent.get(0, 0.0)
    return {
        "train_s_max": max(train.values()),
        "client_s_mean": float(np.mean(clients)),
        "client_s_max": float(np.max(clients)),
        "aggregator_s": aggregator,
        "protocol_path_s": float(np.max(clients)) + aggregator,
        "round_s": max(train[u] + clients[u - 1] for u in range(1, n + 1)) + aggregator,
        "sent_bytes_per_client": float(np.max(sent)),
        "received_bytes_per_client": float(np.max(received)),
    }


Row = dict[str, float]


def best_of(
    repeat: int, run: Callable[[], tuple[Clock, dict[str, int], Any]], n: int, trained: Trained
) -> Row:
    rows = [summarise(*run()[:2], n, trained[1]) for _ in range(repeat)]
    return min(rows, key=lambda r: r["protocol_path_s"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--features", type=int, default=99)
    parser.add_argument("--hidden", type=int, default=1000)
    parser.add_argument("--rows", type=int, default=2000)
    parser.add_argument("--clients", default="3,10")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument(
        "--robust",
        action="store_true",
        help="instead of the dropout way: the robust rules (median, trimmed_mean, krum, "
        "fedavg_clipped), each client's update in the clear; results_robust.json",
    )
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    name = "results_robust.json" if args.robust else "results.json"
    args.json = args.json or Path(__file__).with_name(name)
    out: dict[str, Any] = {
        "params": nmath.length(args.features, args.hidden),
        "model": f"homo_nn {args.features} features x {args.hidden} hidden units",
        "rows_per_client": args.rows,
        "machine": platform.platform(),
        "cpus": os.cpu_count(),
        "load_before": os.getloadavg(),
        "rows": [],
    }
    print(f"model: {out['model']}, {out['params']} parameters; {args.rows} rows per client")
    for n in (int(v) for v in args.clients.split(",")):
        trained = local_training(n, args.features, args.hidden, args.rows)
        plain = best_of(args.repeat, lambda n=n, t=trained: plain_round(n, t), n, trained)
        secure = best_of(args.repeat, lambda n=n, t=trained: secure_round(n, t, 0), n, trained)
        ways = [("plain", plain), ("secagg", secure)]
        if args.robust:
            for rule in ("median", "trimmed_mean", "krum", "fedavg_clipped"):
                run = lambda n=n, t=trained, rule=rule: robust_round(n, t, rule)  # noqa: E731
                ways.append((rule, best_of(args.repeat, run, n, trained)))
        else:
            dropout = best_of(
                args.repeat, lambda n=n, t=trained: secure_round(n, t, n // 3), n, trained
            )
            ways.append((f"dropout {n // 3}", dropout))
        for way, row in ways:
            row = {"clients": n, "way": way, **row}  # type: ignore[dict-item]
            row["protocol_vs_plain"] = row["protocol_path_s"] / plain["protocol_path_s"]
            row["round_vs_plain"] = row["round_s"] / plain["round_s"]
            row["sent_vs_plain"] = row["sent_bytes_per_client"] / plain["sent_bytes_per_client"]
            out["rows"].append(row)
            ms = {k: row[k] * 1e3 for k in ("train_s_max", "client_s_mean", "aggregator_s")}
            print(
                f"n={n:<3} {way:<10} train {ms['train_s_max']:7.1f} ms  client "
                f"{ms['client_s_mean']:7.1f} ms  aggregator {ms['aggregator_s']:7.1f} ms  "
                f"protocol {row['protocol_path_s'] * 1e3:7.1f} ms "
                f"({row['protocol_vs_plain']:.2f}x)  round {row['round_s'] * 1e3:7.1f} ms "
                f"({row['round_vs_plain']:.2f}x)  sent {row['sent_bytes_per_client'] / 1e6:.3f} "
                f"MB ({row['sent_vs_plain']:.3f}x)"
            )
    out["load_after"] = os.getloadavg()
    args.json.write_text(json.dumps(out, indent=2) + "\n")
    print(f"load {out['load_before']} -> {out['load_after']}")


if __name__ == "__main__":
    main()
