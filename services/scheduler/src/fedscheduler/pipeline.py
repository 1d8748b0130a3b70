"""The pipeline model the scheduler works with: fedflow's (the shared contract of issue #5).

Re-exported here so the scheduler names one module for it. The scheduler stores the YAML text
as submitted and parses it again where it needs the model (parsing is deterministic)."""

from __future__ import annotations

from fedflow.descriptors import ComponentSpec, Pipeline, PipelineError, TableUse

__all__ = ["ComponentSpec", "Pipeline", "PipelineError", "TableUse"]
