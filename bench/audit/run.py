"""Audit throughput and lag, and a hetero_lr job's wall time with the audit on and off.

    .venv/bin/python bench/audit/run.py throughput [--messages N] [--rows R] [--baseline-src DIR]
        [--direction out|in]
    .venv/bin/python bench/audit/run.py job [--epochs 2] [--data breast|default_credit] [--repeat N]
        [--snapshot COMMIT] [--py-spy DIR [--py-spy-services audit,gateway]]
        [--ciphertexts-baseline REV | --audit-baseline REV]
    .venv/bin/python bench/audit/run.py record [--messages 300] [--rows 128] [--baseline-src DIR]
        [--direction out|in]

throughput: real RabbitMQ (a fresh vhost) and PostgreSQL (a fresh database). A "peer" publishes
N federation.data messages (hetero_lr ciphertext vectors: `rows` 2048-bit ciphertexts, 64 KiB
at 128 rows) on out.<peer> as fast as its confirms allow, first with no audit subscription
(baseline), then with the audit's fan-out subscription declared and the audit service running.
Reported: the publisher's rate in both runs (does the fan-out slow the relay?), the audit's
drain rate (records/s, from its first to its last record), and the lag from each message's
creation to its record (p50, p95, max). With --baseline-src, the audit process of that
version and of this checkout run alternately, twice each, in one run.

record: the audit's own recording path in-process (no broker): decode, rules, chain, one
transaction per group of 64 on PostgreSQL (a fresh database), as messages/s. With
--baseline-src (a directory holding another version's `fedaudit` package, e.g. from
`git archive <commit> services/audit/src/fedaudit | tar -x -C DIR`), the same messages go
through that version and this one alternately, twice each, in one run.

job: the local two-party stack (`fedmq local up`, separate processes, RabbitMQ, PostgreSQL) on
the breast or default_credit data, psi + hetero_lr, `--repeat` pairs alternating A B A B (every
service, audit included; then the same without the audit), a fresh stack per job; reported:
each job's wall time (submit to success) with the load average at its start, the median per
setting and the median of the pairs' ratios. The issue's measurement, in one line:

    .venv/bin/python bench/audit/run.py job --data default_credit --epochs 1 --repeat 3 \
        --snapshot HEAD

(`--snapshot COMMIT`: the bench and the services run from that commit's tree, so edits others
make in the checkout during the run do not reach the jobs.)

Not a test: results go to docs/benchmarks.md (issue #13's section) by hand.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import time
import urllib.request
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

AMQP = os.environ.get("FEDMQ_TEST_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/%2F")
PG = os.environ.get("FEDMQ_TEST_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres")
GUEST, HOST = "9999", "10000"


BENCH_PIPELINE = f"""\
name: audit-bench
parties:
  guest: "{GUEST}"
  host: ["{HOST}"]
components:
  - name: reader_0
    type: reader
    params:
      guest: {{table: breast_hetero_guest}}
      host: {{table: breast_hetero_host}}
  - name: hetero_lr_0
    type: hetero_lr
    inputs: {{data: reader_0.data}}
    params:
      common: {{epochs: 1, key_bits: 2048}}
"""


def _messages(count: int, rows: int) -> list[Any]:
    """A job's proposal, the guest's 2048-bit public key, then `count` residual messages of
    `rows` ciphertexts each (uniform residues mod n^2: what fresh encryptions look like to the
    audit, which checks range, 1, gcd and repeats on every one)."""
    import random

    from fedcrypto.paillier.keys import generate_keypair
    from fedcrypto.paillier.limbs import from_mpz
    from fedschemas import FederationData, PartyRef, encode_envelope, new_envelope
    from fedschemas.payloads import JobPropose, task_scope_id

    key = generate_keypair(2048)[0]
    nsquare = int(key.nsquare)
    draw = random.Random(0)
    job = f"bench-{uuid.uuid4().hex[:8]}"
    guest, host = PartyRef(party_id=GUEST, role="guest"), PartyRef(party_id=HOST, role="host")
    pipeline = BENCH_PIPELINE
    scope = {"job_id": job, "attempt": 0, "source": guest, "destination": host, "seq": 0}
    out = [
        new_envelope(
            JobPropose(job_id=job, initiator=GUEST, pipeline_yaml=pipeline),
            component="job",
            task_id="",
            tag="propose",
            iteration=-1,
            created_at=datetime.now(UTC),
            **scope,
        ),
        new_envelope(
            FederationData(
                kind="public_key",
                blob=key.to_bytes(),
                blob_format="fedcrypto.paillier.public_key.v1",
            ),
            component="hetero_lr_0",
            task_id=task_scope_id(job, "hetero_lr_0", GUEST, "guest"),
            tag="public_key",
            iteration=-1,
            created_at=datetime.now(UTC),
            **scope,
        ),
    ]
    for i in range(count):
        data = from_mpz([draw.randrange(2, nsquare) for _ in range(rows)], key.limbs)
        env = new_envelope(
            FederationData(
                kind="ciphertext_vector", array=data, meta={"exponent": 0, "bound": "ff"}
            ),
            component="hetero_lr_0",
            task_id=task_scope_id(job, "hetero_lr_0", GUEST, "guest"),
            tag="residual",
            iteration=i,
            created_at=datetime.now(UTC),
            **scope,
        )
        out.append(env)
    return [(e, encode_envelope(e)) for e in out]


def _publish(bus: Any, topic: str, messages: list[Any]) -> float:
    """Publish in groups of 50 (confirms pipelined); each group's envelopes stamped now, so
    the lag counts from the publish, not from when the bench built them."""
    from fedbus import Message
    from fedschemas import encode_envelope

    started = time.perf_counter()
    for i in range(0, len(messages), 50):
        now = datetime.now(UTC)
        stamped = [env.replace(created_at=now) for env, _body in messages[i : i + 50]]
        bus.publish_many([Message(topic, encode_envelope(e), e.message_id) for e in stamped])
    return time.perf_counter() - started


def throughput(
    count: int, rows: int, audit_src: str = "", direction: str = "out"
) -> dict[str, Any]:
    """`audit_src`: run the audit process from that directory's fedaudit (another version);
    `direction`: the sender's audit ("out") or the receiver's ("in", every value checked)."""
    import sqlalchemy as sa
    from fedbus import Message, connect
    from fedcrypto.signing import SigningKey

    from fedmq import local

    vhost = f"bench-audit-{uuid.uuid4().hex[:8]}"
    local.ensure_vhost(vhost)
    url = f"{AMQP.rsplit('/', 1)[0]}/{vhost}"
    db = f"bench_audit_{uuid.uuid4().hex[:8]}"
    admin = sa.create_engine(PG, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{db}"'))
    db_url = f"{PG.rsplit('/', 1)[0]}/{db}"
    observer, topic = _observer(direction)
    try:
        built = _messages(count, rows)
        if direction == "in":
            built = _as_received(built)
        prelude, messages = built[:2], built[2:]
        size = len(messages[0][1])
        with connect(url) as bus:
            bus.declare(topic)
            baseline = _publish(bus, topic, messages)
            bus.delete(topic)
            bus.declare(topic)
            port = local.free_port()
            env = {
                **os.environ,
                "FEDMQ_AUDIT_PARTY_ID": observer,
                "FEDMQ_AUDIT_BUS_URL": url,
                "FEDMQ_AUDIT_DATABASE_URL": db_url,
                "FEDMQ_AUDIT_SIGNING_KEY": SigningKey.generate().to_bytes().hex(),
                "FEDMQ_AUDIT_HTTP_PORT": str(port),
                "FEDMQ_AUDIT_LOG_LEVEL": "ERROR",
                "FEDMQ_AUDIT_PATTERNS": json.dumps([topic]),
            }
            if audit_src:
                env["PYTHONPATH"] = audit_src
            # Its own process, as in production: the publisher here is the relay's stand-in.
            audit = subprocess.Popen([sys.executable, "-m", "fedaudit"], env=env)
            try:
                _get(port, "/healthz", timeout=60)
                bus.publish_many([Message(topic, body, e.message_id) for e, body in prelude])
                audited = _publish(bus, topic, messages)
                deadline = time.monotonic() + 900
                total = len(messages) + len(prelude)
                while time.monotonic() < deadline:
                    if json.loads(_get(port, "/healthz"))["chain_seq"] >= total:
                        break
                    time.sleep(0.2)
                samples = _lag_quantiles(_get(port, "/metrics"))
                with sa.create_engine(db_url).connect() as conn:
                    rows_ = conn.execute(
                        sa.text("SELECT observed_at FROM audit_records ORDER BY seq")
                    ).all()[len(prelude) :]
            finally:
                audit.terminate()
                audit.wait(30)
        first = datetime.fromisoformat(rows_[0][0])
        last = datetime.fromisoformat(rows_[-1][0])
        drain_s = (last - first).total_seconds() or 1e-9
        return {
            "audit": audit_src or "this checkout",
            "direction": direction,
            "messages": count,
            "message_bytes": size,
            "publish_rate_no_audit": round(count / baseline, 1),
            "publish_rate_with_audit": round(count / audited, 1),
            "publish_ratio": round(baseline / audited, 3),
            "audit_records_per_s": round(len(rows_) / drain_s, 1),
            "audit_MB_per_s": round(len(rows_) * size / drain_s / 1e6, 2),
            **samples,
        }
    finally:
        with admin.connect() as conn:
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)'))
        local.delete_vhost(vhost)


def _get(port: int, path: str, timeout: float = 10.0) -> str:
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as answer:
                return str(answer.read().decode())
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


def _lag_quantiles(exposition: str, quantiles: tuple[float, ...] = (0.5, 0.95)) -> dict[str, float]:
    """Upper bucket bounds of the audit's lag histogram at `quantiles` (1.0: the largest lag's
    bucket), from its /metrics."""
    from prometheus_client.parser import text_string_to_metric_families

    samples = {
        float(s.labels["le"]): s.value
        for family in text_string_to_metric_families(exposition)
        if family.name == "fedmq_audit_lag_seconds"
        for s in family.samples
        if s.name.endswith("_bucket")
    }
    total = samples[float("inf")]
    out = {}
    for q in quantiles:
        bound = next(le for le, n in sorted(samples.items()) if n >= q * total)
        out["lag_max_le_s" if q == 1.0 else f"lag_p{int(q * 100)}_le_s"] = bound
    return out


def _job_lags(state: Any) -> dict[str, dict[str, float]]:
    """Each party's audit lag over its life (a fresh stack per job: the job, its set-up and the
    2 s after): the p50, p99 and largest lag's bucket bounds, and the messages recorded."""
    from fedmq import local as launcher

    out = {}
    for party in state.parties:
        exposition = _get(launcher._http_port(state, party, "audit"), "/metrics")
        lags = _lag_quantiles(exposition, (0.5, 0.99, 1.0))
        count = next(
            line
            for line in exposition.splitlines()
            if line.startswith("fedmq_audit_lag_seconds_count")
        )
        pid = launcher.read_pid(state, party, "audit")
        # nice: field 19 of stat, the 17th after the command (what the process runs at)
        nice = int(Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[16])
        out[party] = {**lags, "recorded": int(float(count.split()[-1])), "nice": nice}
    return out


def _observer(direction: str) -> tuple[str, str]:
    """Whose audit records the guest's messages, and on which topic: the guest's as it sends
    them ("out", out.10000) or the host's as its gateway publishes them ("in", svc.worker)."""
    return (GUEST, f"out.{HOST}") if direction == "out" else (HOST, "svc.worker")


def _as_received(built: list[Any]) -> list[Any]:
    """The messages signed, as the sending gateway signs them (the receiver's copy)."""
    from fedaudit.handlers import sign_stop
    from fedcrypto.signing import SigningKey
    from fedschemas import encode_envelope

    key = SigningKey.generate()
    signed = [sign_stop(e, key) for e, _ in built]
    return [(e, encode_envelope(e)) for e in signed]


def record(count: int, rows: int, direction: str = "out", group: int = 64) -> dict[str, Any]:
    """Messages/s and CPU-ms per message through fedaudit.handlers.handle_batch (groups of
    `group`; a job's are mostly of one message) on PostgreSQL, at the
    guest as it sends them (`direction` "out", on out.10000) or at the host as it receives
    them ("in", on svc.worker, signed as the host's gateway publishes them)."""
    import sqlalchemy as sa
    from fedaudit import handlers
    from fedaudit.main import Audit
    from fedaudit.settings import AuditSettings
    from fedbus import Delivery, connect
    from fedcrypto.signing import SigningKey

    db = f"bench_audit_{uuid.uuid4().hex[:8]}"
    admin = sa.create_engine(PG, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{db}"'))
    audit = None
    try:
        built = _messages(count, rows)
        observer, topic = _observer(direction)
        if direction == "in":
            built = _as_received(built)
        settings = AuditSettings(
            party_id=observer,
            bus_url="memory://unused",
            database_url=f"{PG.rsplit('/', 1)[0]}/{db}",
            signing_key=SigningKey.generate().to_bytes().hex(),
            http_port=-1,
            log_json=False,
        )
        audit = Audit(settings, bus=connect(f"memory://bench-{db}"))
        handlers.load(audit.ctx)
        deliveries = [
            Delivery(topic=topic, body=b, message_id=e.message_id, headers={}, delivery_count=1)
            for e, b in built
        ]
        handlers.handle_batch(audit.ctx, deliveries[:2])
        started, cpu = time.perf_counter(), time.process_time()
        for i in range(2, len(deliveries), group):
            handlers.handle_batch(audit.ctx, deliveries[i : i + group])
        took, cpu = time.perf_counter() - started, time.process_time() - cpu
        return {
            "fedaudit": str(Path(handlers.__file__).parent),
            "messages": count,
            "rows": rows,
            "direction": direction,
            "group": group,
            "messages_per_s": round(count / took, 1),
            "cpu_ms_per_message": round(cpu / (count - 2) * 1000, 3),
        }
    finally:
        if audit is not None:
            audit.engine.dispose()
        with admin.connect() as conn:
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)'))


def record_ab(
    count: int,
    rows: int,
    baseline_src: str,
    direction: str = "out",
    group: int = 64,
    current_src: str = "",
) -> dict[str, Any]:
    """record() of the baseline version and of this one (or of `current_src`'s), alternately,
    three times each."""
    runs: dict[str, list[float]] = {"baseline": [], "current": []}
    cpu: dict[str, list[float]] = {"baseline": [], "current": []}
    for _ in range(3):
        for label, src in (("baseline", baseline_src), ("current", current_src)):
            env = {**os.environ, "PYTHONPATH": src} if src else dict(os.environ)
            out = subprocess.run(
                [
                    *(sys.executable, __file__, "record", "--messages", str(count)),
                    *("--rows", str(rows), "--direction", direction, "--group", str(group)),
                ],
                env=env,
                capture_output=True,
                text=True,
                check=True,
            ).stdout
            result = json.loads(out[out.index("{") :])
            if src and not result["fedaudit"].startswith(src):
                raise RuntimeError(f"the baseline ran {result['fedaudit']}, not {src}")
            runs[label].append(result["messages_per_s"])
            cpu[label].append(result["cpu_ms_per_message"])
    return {
        "messages": count,
        "rows": rows,
        "direction": direction,
        "group": group,
        "baseline_messages_per_s": runs["baseline"],
        "current_messages_per_s": runs["current"],
        "baseline_cpu_ms_per_message": cpu["baseline"],
        "current_cpu_ms_per_message": cpu["current"],
        "ratio": round(sum(runs["current"]) / sum(runs["baseline"]), 2),
    }


CREDIT_PIPELINE = """
name: audit-bench-credit
parties: {{guest: "{guest}", host: ["{host}"]}}
components:
  - name: reader_0
    type: reader
    params:
      guest: {{table: default_credit_hetero_guest}}
      host: {{table: default_credit_hetero_host}}
  - name: psi_0
    type: psi
    inputs: {{data: reader_0.data}}
  - name: hetero_lr_0
    type: hetero_lr
    inputs: {{data: psi_0.data}}
    params:
      common: {{epochs: {epochs}, batch_size: 2000, learning_rate: 1.0, seed: 0}}
"""


def _upload_credit(stack: Any) -> None:
    data = REPO / "examples" / "data"
    stack.guest.upload_table(
        "default_credit_hetero_guest",
        data / "default_credit_hetero_guest.csv",
        label_column="y",
        replace=True,
    )
    stack.host.upload_table(
        "default_credit_hetero_host", data / "default_credit_hetero_host.csv", replace=True
    )
    stack.host.grant("default_credit_hetero_host", GUEST, ["psi", "hetero_lr"])


def job(
    epochs: int,
    data: str = "breast",
    repeat: int = 1,
    py_spy: str = "",
    ciphertexts_baseline: str = "",
    spied: tuple[str, ...] = ("audit",),
    audit_baseline: str = "",
    only: tuple[str, ...] = (),
) -> dict[str, Any]:
    """`repeat` pairs run A B A B ... (with the audit, then without), each job on a fresh
    two-party stack. Reported: every time in order with the load average at its start, the
    median of each setting and the median of the pairs' ratios (a load that moves during the
    run moves both jobs of a pair alike more than it moves the medians). With `py_spy` (a
    directory), each process of the `spied` services (default: the audits) is sampled by py-spy
    during each job (raw stacks, <service>_<setting>_<round>_<party>.txt). With
    `ciphertexts_baseline` (a file: an older fedaudit/rules/ciphertexts.py), each round runs a
    third job, between the two, whose audits run that file instead of this tree's (A B C A B
    C): the data.ciphertext_* checks' old and new code in one run. With `audit_baseline` (a
    directory holding another version's `fedaudit` package), that third job's audits run that
    whole package instead: the audit's old and new code in one run."""
    from fedmq import local as launcher
    from tests.audit.test_stack import pipeline
    from tests.local_stack import two_parties, upload_breast

    runs: list[dict[str, Any]] = []
    token = "bench-" + uuid.uuid4().hex
    redis = os.environ.get("FEDMQ_TEST_REDIS_URL", "redis://127.0.0.1:6379/15")
    settings: list[tuple[str, bool, str]] = [("with_audit", True, "")]
    if ciphertexts_baseline:
        settings.append(("with_audit_baseline", True, _baseline_audit_src(ciphertexts_baseline)))
    elif audit_baseline:
        settings.append(("with_audit_baseline", True, _baseline_audit_package(audit_baseline)))
    settings.append(("without_audit", False, ""))
    if only:  # e.g. profiling the audits alone
        settings = [s for s in settings if s[0] in only]
    for round_ in range(repeat):
        for label, audit_on, audit_src in settings:
            saved_path = os.environ.get("PYTHONPATH")
            if audit_src:  # the stack's services (fedmq local inherits the environment)
                os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [audit_src, saved_path]))
            original = launcher.up
            if not audit_on:  # two_parties calls local.up: the same services but the audit

                def up_without(*a: Any, _o: Any = original, **k: Any) -> Any:
                    chosen = k.pop("services", None) or launcher.SERVICES
                    return _o(*a, services=tuple(s for s in chosen if s != "audit"), **k)

                launcher.up = up_without
            try:
                with two_parties(
                    amqp_url=AMQP,
                    redis_url=redis,
                    pg_admin_url=PG,
                    token=token,
                    label=f"b{label[:1]}{len(label)}{round_}",
                ) as stack:
                    if audit_src:
                        _check_audit_imports(stack.state, audit_src)
                    if data == "default_credit":
                        _upload_credit(stack)
                        text = CREDIT_PIPELINE.format(guest=GUEST, host=HOST, epochs=epochs)
                    else:
                        upload_breast(stack)
                        stack.host.grant("breast_hetero_host", GUEST, ["psi", "hetero_lr"])
                        text = pipeline(epochs)
                    load = os.getloadavg()[0]
                    spies = _spy_on(stack.state, py_spy, f"{label}_{round_}", spied)
                    cpu_before = _service_cpu(stack.state)
                    started = time.perf_counter()
                    submitted = stack.guest.submit(text, job_id=f"bench-{label}-{round_}")
                    ended = stack.guest.wait(submitted.job_id, timeout=900, poll=0.5)
                    seconds = round(time.perf_counter() - started, 2)
                    assert ended.state == "success", ended.reason
                    if audit_on:  # the audit's last records land just after the job's end
                        time.sleep(2)
                    cpu = {
                        k: round(v - cpu_before.get(k, 0.0), 2)
                        for k, v in _service_cpu(stack.state).items()
                    }
                    lags = _job_lags(stack.state) if audit_on else {}
                    for spy in spies:  # py-spy writes its file on SIGINT
                        spy.send_signal(signal.SIGINT)
                        spy.wait(timeout=60)
            finally:
                launcher.up = original
                if audit_src:
                    if saved_path is None:
                        os.environ.pop("PYTHONPATH", None)
                    else:
                        os.environ["PYTHONPATH"] = saved_path
            runs.append(
                {
                    "setting": label,
                    "seconds": seconds,
                    "load": round(load, 1),
                    "cpu_s": round(sum(cpu.values()), 2),
                    "audit_cpu_s": round(sum(v for k, v in cpu.items() if k.endswith("/audit")), 2),
                    "cpu_by_service": cpu,
                    **({"audit_lag": lags} if lags else {}),
                }
            )
            print(json.dumps(runs[-1]), file=sys.stderr, flush=True)
    for _, _, audit_src in settings:
        if audit_src:
            shutil.rmtree(audit_src, ignore_errors=True)
    if only:
        return {"data": data, "epochs": epochs, "runs": runs}
    with_audit = [r["seconds"] for r in runs if r["setting"] == "with_audit"]
    baseline = [r for r in runs if r["setting"] == "with_audit_baseline"]
    compared = (
        {
            "median_baseline_audit_s": statistics.median(r["seconds"] for r in baseline),
            "median_cpu_baseline_audit_s": statistics.median(r["cpu_s"] for r in baseline),
            "median_baseline_audit_cpu_s": statistics.median(r["audit_cpu_s"] for r in baseline),
        }
        if baseline
        else {}
    )
    without = [r["seconds"] for r in runs if r["setting"] == "without_audit"]
    ratios = [a / b for a, b in zip(with_audit, without, strict=True)]
    cpu_with = [r["cpu_s"] for r in runs if r["setting"] == "with_audit"]
    cpu_without = [r["cpu_s"] for r in runs if r["setting"] == "without_audit"]
    return {
        "data": data,
        "epochs": epochs,
        # The audits' CPU priority (fedaudit.settings: the default where not set).
        "audit_nice": os.environ.get("FEDMQ_AUDIT_NICE", "default"),
        "runs": runs,
        "median_with_audit_s": statistics.median(with_audit),
        "median_without_audit_s": statistics.median(without),
        "overhead_of_medians": round(
            statistics.median(with_audit) / statistics.median(without) - 1, 4
        ),
        "median_pair_overhead": round(statistics.median(ratios) - 1, 4),
        # CPU seconds of both parties' services during the job (load-independent, unlike wall
        # time on a shared machine): the audit's own, and the total with vs without it.
        "median_cpu_with_audit_s": statistics.median(cpu_with),
        "median_cpu_without_audit_s": statistics.median(cpu_without),
        "cpu_overhead_of_medians": round(
            statistics.median(cpu_with) / statistics.median(cpu_without) - 1, 4
        ),
        "median_audit_cpu_s": statistics.median(
            r["audit_cpu_s"] for r in runs if r["setting"] == "with_audit"
        ),
        **compared,
    }


def _baseline_audit_src(ciphertexts: str) -> str:
    """A copy of this tree's fedaudit package with rules/ciphertexts.py replaced by the file
    `ciphertexts`, in a temporary directory to put first on the services' PYTHONPATH."""
    import tempfile

    import fedaudit

    root = Path(tempfile.mkdtemp(prefix="bench-audit-baseline-"))
    package = root / "fedaudit"
    shutil.copytree(Path(fedaudit.__file__).parent, package)
    shutil.copy(ciphertexts, package / "rules" / "ciphertexts.py")
    return str(root)


def _baseline_audit_package(directory: str) -> str:
    """A copy of `directory`'s fedaudit package in a temporary directory to put first on the
    services' PYTHONPATH."""
    import tempfile

    root = Path(tempfile.mkdtemp(prefix="bench-audit-baseline-"))
    shutil.copytree(Path(directory) / "fedaudit", root / "fedaudit")
    return str(root)


def _audit_package_at(revision: str) -> str:
    """`revision`'s fedaudit package exported into a temporary directory (`revision` may be
    such a directory already)."""
    import tempfile

    if (Path(revision) / "fedaudit").is_dir():
        return revision
    root = tempfile.mkdtemp(prefix="bench-audit-rev-")
    archive = subprocess.run(
        ["git", "-C", str(REPO), "archive", revision, "services/audit/src/fedaudit"],
        check=True,
        capture_output=True,
    ).stdout
    subprocess.run(["tar", "-x", "-C", root, "--strip-components=3"], input=archive, check=True)
    return root


def _check_audit_imports(state: Any, audit_src: str) -> None:
    """Refuse to measure a baseline the audits did not load: each audit's PYTHONPATH starts
    with `audit_src`."""
    from fedmq import local as launcher

    for party in state.parties:
        pid = launcher.read_pid(state, party, "audit")
        environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
        path = next((e[11:] for e in environ if e.startswith(b"PYTHONPATH=")), b"").decode()
        if not path.startswith(audit_src):
            raise RuntimeError(f"the audit of {party} runs with PYTHONPATH={path!r}")


def _spy_on(
    state: Any, directory: str, run: str, services: tuple[str, ...]
) -> list[subprocess.Popen[bytes]]:
    """py-spy (from this environment's bin) sampling each party's `services` processes, 200 Hz,
    without pausing them (a pausing py-spy costs the process several times its own CPU)."""
    if not directory:
        return []
    from fedmq import local as launcher

    Path(directory).mkdir(parents=True, exist_ok=True)
    spy = str(Path(sys.executable).parent / "py-spy")
    spies = []
    for party, service in ((p, s) for p in state.parties for s in services):
        pid = launcher.read_pid(state, party, service)
        if pid is not None:
            out = Path(directory) / f"{service}_{run}_{party}.txt"
            command = [spy, "record", "--nonblocking", "-p", str(pid), "-r", "200", "-f", "raw"]
            command += ["-o", str(out)]
            spies.append(subprocess.Popen(command, stdout=subprocess.DEVNULL))
    return spies


def _service_cpu(state: Any) -> dict[str, float]:
    """CPU seconds (user + system) each running service process of each party has used,
    keyed "<party>/<service>" (from /proc: the stack's own processes only)."""
    from fedmq import local as launcher

    tick = os.sysconf("SC_CLK_TCK")
    out: dict[str, float] = {}
    for party in state.parties:
        for service in launcher.SERVICES:
            pid = launcher.read_pid(state, party, service)
            if pid is None:
                continue
            try:
                fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
            except OSError:
                continue
            # utime and stime: fields 14 and 15 of stat, 12th and 13th after the command
            out[f"{party}/{service}"] = (int(fields[11]) + int(fields[12])) / tick
    return out


def _ciphertexts_file(revision: str) -> str:
    """fedaudit/rules/ciphertexts.py at `revision` as a file (`revision` may be a file)."""
    import tempfile

    if Path(revision).is_file():
        return revision
    text = subprocess.run(
        [
            "git",
            "-C",
            str(REPO),
            "show",
            f"{revision}:services/audit/src/fedaudit/rules/ciphertexts.py",
        ],
        check=True,
        capture_output=True,
    ).stdout
    fd, name = tempfile.mkstemp(prefix="bench-ciphertexts-", suffix=".py")
    os.write(fd, text)
    os.close(fd)
    return name


def snapshot_and_rerun(commit: str, argv: list[str]) -> int:
    """Run this bench from `commit`'s tree (git archive into a temporary directory): the
    services the stacks start import that tree (PYTHONPATH, inherited by `fedmq local`'s
    processes), so edits made in the checkout while the bench runs cannot reach its jobs."""
    import shutil
    import tempfile

    with tempfile.TemporaryDirectory(prefix="fedmq-bench-") as tmp:
        root = Path(tmp)
        archive = subprocess.run(
            ["git", "-C", str(REPO), "archive", commit], check=True, capture_output=True
        ).stdout
        subprocess.run(["tar", "-x", "-C", str(root)], input=archive, check=True)
        # Built extensions are not in git: take this checkout's.
        for native in REPO.glob("libs/*/src/*/*.so"):
            target = root / native.relative_to(REPO)
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(native, target)
        sources = [str(p) for p in sorted(root.glob("*/*/src")) + sorted(root.glob("*/src"))]
        sources += [str(root / "src"), str(root)]
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(sources))
        print(f"bench: running {commit} from {root}", file=sys.stderr, flush=True)
        return subprocess.run(
            [sys.executable, str(root / "bench" / "audit" / "run.py"), *argv], env=env
        ).returncode


def _interrupt(signum: int, _frame: Any) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("what", choices=("throughput", "job", "record"))
    parser.add_argument("--messages", type=int, default=2000)
    parser.add_argument("--rows", type=int, default=128)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--data", choices=("breast", "default_credit"), default="breast")
    parser.add_argument("--baseline-src", default="")
    parser.add_argument(
        "--current-src",
        default="",
        help="record, throughput: the version compared with --baseline-src's (a directory "
        "holding a fedaudit package; default: this checkout's, with what others edit in it)",
    )
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument("--group", type=int, default=64, help="record: deliveries per group")
    parser.add_argument("--direction", choices=("out", "in"), default="out")
    parser.add_argument("--py-spy", default="", help="job: sample the audits with py-spy into DIR")
    parser.add_argument(
        "--py-spy-services",
        default="audit",
        help="job: the services --py-spy samples, comma-separated (e.g. audit,gateway,worker)",
    )
    parser.add_argument(
        "--ciphertexts-baseline",
        default="",
        help="job: also run the audits with fedaudit/rules/ciphertexts.py of this revision (or "
        "file), alternating",
    )
    parser.add_argument(
        "--only",
        default="",
        help="job: run only these settings (with_audit, with_audit_baseline, without_audit)",
    )
    parser.add_argument(
        "--audit-baseline",
        default="",
        help="job: also run the audits from this revision's fedaudit package (or a directory "
        "holding one), alternating A B C",
    )
    parser.add_argument(
        "--snapshot",
        default="",
        help="run from this commit's tree (e.g. HEAD), not the working tree others may edit",
    )
    args = parser.parse_args()
    # SIGTERM (and SIGINT, which a shell's background job ignores) unwinds like Ctrl-C, so
    # that the stacks' context managers take them down.
    signal.signal(signal.SIGTERM, _interrupt)
    signal.signal(signal.SIGINT, _interrupt)
    if args.snapshot:
        argv = sys.argv[1:]
        at = argv.index("--snapshot")
        argv = argv[:at] + argv[at + 2 :]
        if args.ciphertexts_baseline:  # a revision: resolved here, where the git checkout is
            at = argv.index("--ciphertexts-baseline")
            argv[at + 1] = _ciphertexts_file(args.ciphertexts_baseline)
        if args.audit_baseline:  # likewise
            where = argv.index("--audit-baseline")
            argv[where + 1] = _audit_package_at(args.audit_baseline)
        try:
            return snapshot_and_rerun(args.snapshot, argv)
        finally:
            if args.ciphertexts_baseline and argv[at + 1] != args.ciphertexts_baseline:
                os.unlink(argv[at + 1])
            if args.audit_baseline and argv[where + 1] != args.audit_baseline:
                shutil.rmtree(argv[where + 1], ignore_errors=True)
    run = {
        "throughput": lambda: (
            [
                throughput(args.messages, args.rows, src, args.direction)
                for src in (args.baseline_src, args.current_src) * 2
            ]
            if args.baseline_src
            else throughput(args.messages, args.rows, direction=args.direction)
        ),
        "job": lambda: job(
            args.epochs,
            args.data,
            args.repeat,
            args.py_spy,
            _ciphertexts_file(args.ciphertexts_baseline) if args.ciphertexts_baseline else "",
            tuple(args.py_spy_services.split(",")),
            _audit_package_at(args.audit_baseline) if args.audit_baseline else "",
            tuple(filter(None, args.only.split(","))),
        ),
        "record": lambda: (
            record_ab(
                args.messages,
                args.rows,
                args.baseline_src,
                args.direction,
                args.group,
                args.current_src,
            )
            if args.baseline_src
            else record(args.messages, args.rows, args.direction, args.group)
        ),
    }
    result = run[args.what]()
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
