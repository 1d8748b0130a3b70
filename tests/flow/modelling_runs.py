"""Run one component at the guest and its hosts in this process (no reader or psi): the inputs
are stored as if an upstream component had made them. Shared by the modelling components'
tests (binning, selection, pearson, onehot, imputation)."""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fedflow.artifacts import Artifact, ArtifactMissing
from fedflow.local_relay import Crossing
from fedflow.metrics import MetricsReader
from fedflow.standalone import LocalWorld

from tests.flow.running import start_task

GUEST = "9999"


@dataclass
class Outcome:
    outputs: dict[str, dict[str, Artifact]]
    """party -> output name -> artifact."""
    metrics: dict[str, dict[str, float]]
    """party -> metric name -> value (final values, step -1)."""
    errors: dict[str, BaseException]
    crossings: list[Crossing]


def run_component(
    tmp_path: Path,
    component_type: str,
    inputs: Mapping[str, Mapping[str, Artifact]],
    params: Mapping[str, Any] | None = None,
    *,
    party_params: Mapping[str, Mapping[str, Any]] | None = None,
    timeout: float = 60.0,
) -> Outcome:
    """`inputs`: party -> input name -> artifact; the first party is the guest, the others
    hosts. `params` for every party, `party_params` added per party."""
    parties = list(inputs)
    roles = {p: ("guest" if p == GUEST else "host") for p in parties}
    layout = {"guest": [GUEST], "host": [p for p in parties if p != GUEST]}
    job = "job-m"
    with LocalWorld(parties, tmp_path / f"world-{component_type}") as world:
        runs = {}
        for party in parties:
            refs = {}
            for name, artifact in inputs[party].items():
                world.parties[party].runtime.artifacts.put(
                    job, "src", party, roles[party], name, artifact, 0
                )
                refs[name] = f"src.{name}"
            spec = world.parties[party].task(
                job,
                "c_0",
                component_type,
                roles[party],
                layout,
                params={**(params or {}), **(party_params or {}).get(party, {})},
                inputs=refs,
            )
            runs[party] = start_task(world, spec, recv_timeout=timeout, join_timeout=timeout)
        # A party that fails cancels the others (they would wait for its messages).
        deadline = time.monotonic() + timeout + 30
        while any(r.thread.is_alive() for r in runs.values()):
            if any(r.error for r in runs.values()):
                for r in runs.values():
                    r.cancel.set()
            assert time.monotonic() < deadline, "a task did not finish"
            time.sleep(0.05)
        outputs: dict[str, dict[str, Artifact]] = {}
        metrics: dict[str, dict[str, float]] = {}
        errors: dict[str, BaseException] = {}
        for party, running in runs.items():
            if running.error:
                errors[party] = running.error[0]
                continue
            store = world.parties[party].runtime.artifacts
            outputs[party] = {}
            for name in ("data", "model", "profile"):
                try:
                    outputs[party][name] = store.get_artifact(
                        job, party, roles[party], f"c_0.{name}"
                    )
                except ArtifactMissing:  # an output this component does not make
                    continue
            reader = MetricsReader(world.parties[party].engine)
            metrics[party] = {m.name: m.value for m in reader.metrics(job, "c_0") if m.step == -1}
        return Outcome(outputs, metrics, errors, world.crossings.snapshot())
