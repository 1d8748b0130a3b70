"""fedflow's descriptors (pipelines, params, protocols, the component catalogue) are light: the
scheduler imports them without numpy, fedcrypto or any component's code, and they agree with
the runtime's registry and with the wire contract."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import get_args

import pytest
from fedflow import descriptors
from fedflow.components import REGISTRY
from fedschemas import FederationData, PartyRef

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "pipelines"

PROBE = """
import json, sys
from pathlib import Path
import fedflow.descriptors as d
pipeline = d.Pipeline.from_yaml(Path(sys.argv[1]).read_text())
heavy = sorted(
    m for m in sys.modules
    if m.split(".")[0] in ("numpy", "fedcrypto", "fedschemas", "sqlalchemy")
    or m.startswith(("fedflow.kit.", "fedflow.runner", "fedflow.tables"))
    or m.endswith((".guest", ".host", ".component", ".math"))
)
print(json.dumps({
    "heavy": heavy,
    "components": [c.name for c in pipeline.components_in_order()],
    "names": sorted(d.COMPONENT_NAMES),
    "protocols": len(json.loads(d.all_protocols_json())),
}))
"""


def test_importing_descriptors_and_validating_a_pipeline_loads_no_numpy_crypto_or_code() -> None:
    # Execute: a fresh interpreter, as the scheduler starts
    done = subprocess.run(
        [sys.executable, "-c", PROBE, str(EXAMPLES / "hetero_lr_breast.yaml")],
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    )
    seen = json.loads(done.stdout)

    # Assert: the pipeline was validated against every component's params and protocol, and
    # nothing heavy came with it
    assert seen["heavy"] == []
    assert "hetero_lr_0" in seen["components"]
    assert {"psi", "hetero_lr", "hetero_lr_predict", "evaluation"} <= set(seen["names"])
    assert seen["protocols"] == len(seen["names"])


def test_the_catalogue_names_what_the_registry_runs_with_the_same_declarations() -> None:
    assert set(descriptors.CATALOGUE) == set(REGISTRY) == descriptors.COMPONENT_NAMES
    for name, declared in descriptors.CATALOGUE.items():
        loaded = REGISTRY[name]
        assert loaded.roles == declared.roles and loaded.params is declared.params
        assert loaded.declared_protocol() == declared.declared_protocol()
        assert set(loaded.code) == set(declared.roles)


def test_the_light_roles_and_payload_kinds_are_the_wire_contracts() -> None:
    # The descriptors cannot import fedschemas (numpy); these must stay equal to it.
    wire_kinds = get_args(FederationData.model_fields["kind"].annotation)
    wire_roles = set(get_args(PartyRef.model_fields["role"].annotation)) - {"local"}
    assert set(descriptors.PAYLOAD_KINDS) == set(wire_kinds)
    assert set(descriptors.PROTOCOL_ROLES) == wire_roles == set(descriptors.ROLES)


def test_an_old_pipeline_with_thread_params_stays_valid_and_is_warned_about() -> None:
    # Prepare: the breast example as written before threads became the party's settings
    text = (EXAMPLES / "hetero_lr_breast.yaml").read_text()
    old = text.replace("seed: 1}", "seed: 1, threads: 8, prefetch_threads: 4}")
    assert old != text

    # Execute
    with pytest.warns(DeprecationWarning, match="threads, prefetch_threads are ignored"):
        pipeline = descriptors.Pipeline.from_yaml(old)

    # Assert: valid, the old params kept as written (a task still validates them)
    params = pipeline.component("hetero_lr_0").params_for("guest", "9999")
    assert params["threads"] == 8 and params["prefetch_threads"] == 4
