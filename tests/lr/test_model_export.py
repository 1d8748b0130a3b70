"""`fedmq standalone metrics|model`: a standalone run's metrics, curves and each party's model
come back as JSON from the parties' databases, equal to what the run computed."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from fedflow.pipeline import Pipeline
from fedflow.standalone import run_pipeline
from typer.testing import CliRunner

from fedmq.standalone_cli import standalone_app
from tests.lr.conftest import EXAMPLE_DATA, GUEST, HOST
from tests.lr.test_quality import PIPELINE


@pytest.mark.timeout(300)
def test_metrics_and_each_partys_model_export_as_json(tmp_path: Path) -> None:
    # Prepare: the breast example, short keys, two epochs, with scaling and a profile
    spec = yaml.safe_load(PIPELINE.read_text())
    (lr,) = [c for c in spec["components"] if c["type"] == "hetero_lr"]
    lr["params"]["common"].update(epochs=2, key_bits=512, insecure_short_keys=True)
    lr["inputs"] = {"data": "scale_0.data"}
    spec["components"][2:2] = [
        {"name": "scale_0", "type": "feature_scale", "inputs": {"data": "psi_0.data"}}
    ]
    result = run_pipeline(
        Pipeline.from_dict(spec), {GUEST: EXAMPLE_DATA, HOST: EXAMPLE_DATA}, tmp_path
    )
    runner = CliRunner()
    where = ["--workdir", str(tmp_path)]

    # Execute
    model = runner.invoke(standalone_app, ["model", result.job_id, "hetero_lr_0", *where])
    scaling = runner.invoke(standalone_app, ["model", result.job_id, "scale_0", *where])
    metrics = runner.invoke(
        standalone_app, ["metrics", result.job_id, "--component", "eval_0", *where]
    )
    missing = runner.invoke(standalone_app, ["model", result.job_id, "nope", *where])

    # Assert: each party's weights by its own feature names, as the run stored them
    assert model.exit_code == 0, model.output
    parties = json.loads(model.output)["parties"]
    for party, role in ((GUEST, "guest"), (HOST, "host")):
        stored = result.output(party, role, "hetero_lr_0", "model")
        exported = parties[party][role]["model"]
        assert exported["kind"] == "weights"
        assert exported["weights"] == dict(
            zip(stored.ids.tolist(), stored.features[:, 0].tolist(), strict=True)
        )
    assert "intercept" in parties[GUEST]["guest"]["model"]["weights"]
    assert "intercept" not in parties[HOST]["host"]["model"]["weights"]
    # A fitted scaling: its document and arrays; the scaled table: rows and columns
    fitted = json.loads(scaling.output)["parties"][HOST]["host"]
    assert fitted["model"]["document"]["method"] == "standard"
    assert len(fitted["model"]["arrays"]["center"]) == 20
    assert fitted["data"]["kind"] == "table" and fitted["data"]["rows"] == 569
    # Metrics and curves of one component, the values the run logged
    exported_metrics = json.loads(metrics.output)
    auc = [m["value"] for m in exported_metrics["metrics"] if m["name"] == "auc"]
    assert auc == [result.metric("eval_0", "auc")]
    assert {c["name"] for c in exported_metrics["curves"]} >= {"roc", "ks", "gain", "lift"}
    assert missing.exit_code == 1
    assert "no outputs of nope" in missing.output
