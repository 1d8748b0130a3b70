"""noop: a component that does nothing, for measuring the runtime's own cost per component.

It runs at the guest and every host, exchanges no message (its protocol is empty, so the
Federation layer refuses any send it might attempt) and reads no table. The pipeline model
orders components only through data inputs, so noop has an optional `after` input and one
output, `done`: an empty table (no rows, no features) that a later noop names as its `after`
to run strictly after this one (bench/jobs chains 20 of them). The runner stores every
declared output it is given and a downstream input must find its artifact, so `done` is
always returned; it holds nothing about the party's data.
"""

from __future__ import annotations

from fedflow.components.base import ComponentDescriptor, InputSpec
from fedflow.protocol import Protocol

NOOP_PROTOCOL = Protocol(
    component_type="noop",
    description="no messages: the component exchanges nothing",
)

NOOP = ComponentDescriptor(
    name="noop",
    description="does nothing (runtime overhead benchmarks); `after` orders it after another",
    entry="fedflow.components.noop.component:run",
    roles=("guest", "host"),
    inputs=(
        InputSpec(
            "after",
            required=False,
            description="any upstream output: run after that component (the data is unused)",
        ),
    ),
    outputs=("done",),
    protocol=NOOP_PROTOCOL,
)
