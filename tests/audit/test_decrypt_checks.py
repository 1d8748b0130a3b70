"""data.decrypted_bounds at the components' own decryptions: the guest of hetero_pearson
(the hosts' cross products), hetero_feature_binning (the hosts' per-bin label sums) and
hetero_secureboost (the hosts' histograms) checks what it decrypted against the bound the
protocol agrees (fedflow.kit.decrypt_check) and reports the counts to its own audit before
using or refusing them. A host that sends crafted values there is named by the guest's audit;
an honest run of each reports every decryption, all in bound, and no finding above info."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from fedaudit.standalone import AuditedRun
from fedcrypto import EncryptedVector, PublicKey
from fedcrypto.paillier.limbs import from_mpz
from fedflow.components.hetero_feature_binning import component as binning
from fedflow.components.hetero_pearson import component as pearson
from fedflow.components.hetero_secureboost import cipher
from fedflow.pipeline import Pipeline
from fedflow.standalone import StandaloneError, run_pipeline

from tests.scheduler.conftest import GUEST, HOST

REPO = Path(__file__).resolve().parents[2]
DATA = REPO / "examples" / "data"
SHORT = "key_bits: 512, insecure_short_keys: true"
COMPONENTS = {
    "pearson_0": f"""\
  - name: pearson_0
    type: hetero_pearson
    inputs: {{data: reader_0.data}}
    params:
      common: {{{SHORT}}}
      guest: {{columns: [x0, x1, x2]}}
      host: {{columns: [x0, x1, x2, x3]}}
""",
    "binning_0": f"""\
  - name: binning_0
    type: hetero_feature_binning
    inputs: {{data: reader_0.data}}
    params:
      common: {{bin_num: 5, {SHORT}}}
""",
    "boost_0": f"""\
  - name: boost_0
    type: hetero_secureboost
    inputs: {{data: reader_0.data}}
    params:
      common: {{num_trees: 1, max_depth: 2, {SHORT}}}
""",
}
DECRYPTED_TAG = {"pearson_0": "cross", "binning_0": "bin_events", "boost_0": "histograms"}


def _pipeline_yaml(components: list[str]) -> str:
    return f"""\
name: decrypt-checks
parties:
  guest: "{GUEST}"
  host: ["{HOST}"]
components:
  - name: reader_0
    type: reader
    params:
      guest: {{table: breast_hetero_guest}}
      host: {{table: breast_hetero_host}}
""" + "".join(COMPONENTS[c] for c in components)


def _run(tmp_path: Path, components: list[str]) -> tuple[AuditedRun, Exception | None]:
    text = _pipeline_yaml(components)
    pipeline = Pipeline.from_yaml(text)
    audited = AuditedRun(pipeline, text, tmp_path, min_key_bits={GUEST: 512, HOST: 512})
    try:
        run_pipeline(pipeline, {GUEST: DATA, HOST: DATA}, tmp_path, watch=audited)
    except StandaloneError as exc:  # the job fails: stopped by the audit, or refused
        return audited, exc
    return audited, None


def _reports(audited: AuditedRun, party: str) -> list[dict[str, Any]]:
    return [
        {**r["facts"], "component": r["component"]}
        for r in audited.audits[party].records(audited.job_id, "local")
        if r["type"] == "report.decrypt_check"
    ]


def test_honest_decryptions_of_each_component_are_reported_in_bound(tmp_path: Path) -> None:
    # Execute: the three components, honest, in one job
    audited, failed = _run(tmp_path, list(COMPONENTS))

    # Assert: the guest reported each component's decryptions of the host's values, every
    # plaintext in bound; no finding above info at either party
    assert failed is None, failed
    reports = _reports(audited, GUEST)
    assert {(r["component"], r["checked_tag"], r["peer"]) for r in reports} == {
        (name, tag, HOST) for name, tag in DECRYPTED_TAG.items()
    }
    assert all(r["count"] > 0 for r in reports), reports
    assert all(r["nan"] == r["infinite"] == r["out_of_bound"] == 0 for r in reports), reports
    for party in (GUEST, HOST):
        assert audited.audits[party].findings(audited.job_id) == [], party


def _shifted(vec: EncryptedVector, shift: int) -> EncryptedVector:
    """The same ciphertexts under another exponent: every value times 16^shift."""
    return EncryptedVector(
        vec.public_key, vec.data, vec.exponent + shift, vec.shape, bound=vec.bound
    )


def _pearson_host(shift: int) -> Any:
    honest = pearson._cross
    return lambda *args: _shifted(honest(*args), shift)


def _binning_host(shift: int) -> Any:
    honest = binning._bin_sums
    return lambda *args: _shifted(honest(*args), shift)


def _high_bits(key: PublicKey, *args: Any) -> EncryptedVector:
    """Compressed histograms whose first plaintext has a bit above its last cell."""
    sent = HONEST_COMPRESS(key, *args)
    data = sent.data.copy()
    raw = from_mpz([1 << (key.n_length - 2)], key.plain_limbs)
    data[0] = key.encrypt_residues(raw, obfuscate=False)[0]
    return EncryptedVector(key, data, 0, (data.shape[0],), bound=key.max_int)


HONEST_COMPRESS = cipher.compress


@pytest.mark.parametrize(
    ("component", "target", "attr", "crafted", "named"),
    [
        pytest.param(
            "pearson_0", pearson, "_cross", _pearson_host(2), "out of bound", id="pearson-x256"
        ),
        pytest.param(
            "binning_0", binning, "_bin_sums", _binning_host(1), "out of bound", id="binning-x16"
        ),
        pytest.param(
            "boost_0", cipher, "compress", _high_bits, "1 out of bound", id="secureboost-bits"
        ),
    ],
)
def test_a_host_sending_crafted_values_to_decrypt_is_caught_by_the_guests_audit(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    component: str,
    target: Any,
    attr: str,
    crafted: Any,
    named: str,
) -> None:
    # Prepare: the host's side of the component sends crafted values (only the host runs the
    # patched function)
    monkeypatch.setattr(target, attr, crafted)

    # Execute
    audited, failed = _run(tmp_path, [component])

    # Assert: the job fails, and the guest's audit names the host under data.decrypted_bounds
    assert failed is not None
    found = audited.audits[GUEST].findings(audited.job_id)
    assert [(f["rule"], f["severity"], f["party"]) for f in found] == [
        ("data.decrypted_bounds", "critical", HOST)
    ], found
    assert f"{DECRYPTED_TAG[component]!r} of {component}" in found[0]["detail"]
    assert named in found[0]["detail"], found[0]["detail"]
