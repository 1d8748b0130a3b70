"""data.decrypted_bounds at the two loss-term decryptions: hetero_poisson's guest decrypting
each host's label score [[y . u_h]] (bound |y . u_h| <= 700 sum(y): every honest host score is
inside (-700, 700), the host refuses to go on otherwise) and hetero_lr's guest decrypting each
host's cross term with several hosts, host_cross = [[sum over the other hosts h' of u_h .
(host_coef u_h')]] (bound: Cauchy-Schwarz on the sums of squares the hosts send,
host_coef sum sqrt(S_h S_h')). Each is reported to the guest's audit (report.decrypt_check)
before it is used; a host that sends a crafted value there is named by the guest's audit and
the guest refuses the value. One guest and two hosts, 512-bit test keys, standalone."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fedaudit.standalone import AuditedRun
from fedcrypto import EncryptedVector
from fedflow.components.hetero_lr import host as lr_host
from fedflow.components.hetero_poisson import train as poisson
from fedflow.pipeline import Pipeline
from fedflow.standalone import StandaloneError, run_pipeline
from fedflow.tables import Table

from tests.flow.test_feature_scale import write_csv
from tests.flow.test_hetero_poisson import poisson_diabetes

GUEST, HOST, HOST2 = "9999", "10000", "10001"
COMMON = "epochs: 1, batch_size: 200, seed: 0, key_bits: 512, insecure_short_keys: true"
COMPONENTS = {
    "poisson_0": f"""\
  - name: poisson_0
    type: hetero_poisson
    inputs: {{data: counts_0.data}}
    params:
      common: {{{COMMON}, learning_rate: 0.1, early_stop: false}}
      guest: {{exposure: exposure}}
""",
    "lr_0": f"""\
  - name: lr_0
    type: hetero_lr
    inputs: {{data: binary_0.data}}
    params:
      common: {{{COMMON}, learning_rate: 0.15, early_stop: false}}
""",
}
CHECKED_TAG = {"poisson_0": "label_score", "lr_0": "host_cross"}


@pytest.fixture(scope="module")
def tables(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Diabetes with a Poisson count label (tests.flow.test_hetero_poisson): the guest's counts
    and exposure (d_guest) or a binary label, count above the median (b_guest), 4 columns; the
    hosts 3 columns each (d_host_a, d_host_b)."""
    folder = tmp_path_factory.mktemp("loss_terms")
    guest, host, _ = poisson_diabetes()
    assert guest.labels is not None
    write_csv(folder / "d_guest.csv", guest)
    binary = (guest.labels > np.median(guest.labels)).astype(np.float64)
    features = guest.features[:, :4]
    write_csv(folder / "b_guest.csv", Table(guest.ids, features, guest.feature_names[:4], binary))
    for name, columns in (("d_host_a", slice(0, 3)), ("d_host_b", slice(3, 6))):
        part = Table(host.ids, host.features[:, columns], host.feature_names[columns], None)
        write_csv(folder / f"{name}.csv", part)
    return folder


def _pipeline_yaml(components: list[str]) -> str:
    return f"""\
name: loss-term-checks
parties:
  guest: "{GUEST}"
  host: ["{HOST}", "{HOST2}"]
components:
  - name: counts_0
    type: reader
    params:
      guest: {{table: d_guest}}
      "{HOST}": {{table: d_host_a}}
      "{HOST2}": {{table: d_host_b}}
  - name: binary_0
    type: reader
    params:
      guest: {{table: b_guest}}
      "{HOST}": {{table: d_host_a}}
      "{HOST2}": {{table: d_host_b}}
""" + "".join(COMPONENTS[c] for c in components)


def _run(
    tables: Path, workdir: Path, components: list[str], severities: dict[str, str] | None = None
) -> tuple[AuditedRun, Exception | None]:
    text = _pipeline_yaml(components)
    pipeline = Pipeline.from_yaml(text)
    floors = {party: 512 for party in (GUEST, HOST, HOST2)}
    audited = AuditedRun(
        pipeline, text, workdir, min_key_bits=floors, severities=dict(severities or {})
    )
    sources = {party: tables for party in (GUEST, HOST, HOST2)}
    try:
        run_pipeline(pipeline, sources, workdir, watch=audited)
    except StandaloneError as exc:  # the job fails: stopped by the audit, or refused
        return audited, exc
    return audited, None


def _loss_term_reports(audited: AuditedRun) -> list[dict[str, Any]]:
    return [
        {**r["facts"], "component": r["component"], "iteration": r["iteration"]}
        for r in audited.audits[GUEST].records(audited.job_id, "local")
        if r["type"] == "report.decrypt_check"
        and r["facts"].get("checked_tag") in CHECKED_TAG.values()
    ]


def test_honest_loss_terms_are_reported_in_bound_for_every_host(
    tables: Path, tmp_path: Path
) -> None:
    # Execute: both components, honest, in one job (two iterations each)
    audited, failed = _run(tables, tmp_path, list(COMPONENTS))

    # Assert: the guest reported each host's loss term of each iteration, every plaintext in
    # bound, and no party's audit found anything above info
    assert failed is None, failed
    reports = _loss_term_reports(audited)
    seen = sorted((r["component"], r["checked_tag"], r["peer"], r["iteration"]) for r in reports)
    assert seen == [
        (name, tag, peer, t)
        for name, tag in sorted(CHECKED_TAG.items())
        for peer in (HOST, HOST2)
        for t in (0, 1)
    ]
    assert all(r["nan"] == r["infinite"] == r["out_of_bound"] == 0 for r in reports), reports
    for party in (GUEST, HOST, HOST2):
        assert audited.audits[party].findings(audited.job_id) == [], party


def _poisson_plus(amount: float) -> Any:
    """HOST2's label score with `amount` added (a host lowering the guest's loss)."""
    honest = poisson._label_score

    def crafted(run: Any, u_h: Any, y: EncryptedVector) -> EncryptedVector:
        score = honest(run, u_h, y)
        return score + np.array([amount]) if run.ctx.party_id == HOST2 else score

    return crafted


def _cross_plus(amount: float) -> Any:
    """HOST2's cross term with `amount` added to every lane."""
    honest = lr_host._host_cross

    def crafted(step: Any, scores: Any, peer_scores: Any) -> EncryptedVector:
        cross = honest(step, scores, peer_scores)
        return cross + np.full(cross.shape, amount) if step.run.ctx.party_id == HOST2 else cross

    return crafted


@pytest.mark.parametrize(
    ("component", "attr", "target", "crafted", "refusal"),
    [
        pytest.param(
            "poisson_0",
            "_label_score",
            poisson,
            _poisson_plus(1e9),
            "label_score from 10001 at iteration 0",
            id="poisson-label-score",
        ),
        pytest.param(
            "lr_0",
            "_host_cross",
            lr_host,
            _cross_plus(10.0),
            "host_cross from 10001 at iteration 0",
            id="lr-host-cross",
        ),
    ],
)
def test_a_host_sending_a_crafted_loss_term_is_caught_by_the_guests_audit(
    tables: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    component: str,
    attr: str,
    target: Any,
    crafted: Any,
    refusal: str,
) -> None:
    # Prepare: the second host adds a constant to its loss term (at iteration 0 every host
    # score is 0, so the honest term is 0: hetero_lr's bound is then the encoding's slack,
    # hetero_poisson's 700 sum(y), about 5.5e5 for these 221 rows). The rule is lowered to
    # warn so that the guest's own refusal, not the audit's stop, ends the job (the stop on a
    # critical data.decrypted_bounds is tests/audit/test_decrypted.py's)
    monkeypatch.setattr(target, attr, crafted)

    # Execute
    audited, failed = _run(tables, tmp_path, [component], {"data.decrypted_bounds": "warn"})

    # Assert: the guest refused the value, and its audit names the second host under
    # data.decrypted_bounds (the first host's term, honest, is clean)
    assert failed is not None
    assert refusal in str(failed), failed
    found = audited.audits[GUEST].findings(audited.job_id)
    assert [(f["rule"], f["severity"], f["party"]) for f in found] == [
        ("data.decrypted_bounds", "warn", HOST2)
    ], found
    assert f"{CHECKED_TAG[component]!r} of {component}" in found[0]["detail"]
    assert "out of bound" in found[0]["detail"], found[0]["detail"]
