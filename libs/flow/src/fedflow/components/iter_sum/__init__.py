"""iter_sum: a small iterative two-role component for testing cross-party resume.

Each of `rounds` rounds, every host sends the guest a masked vector derived from its data and
the round number -- (r + 1) * column means of its squared features + a fresh mask drawn from
the host's RNG -- and the guest adds it to its running sum and acknowledges the round. At the
end each host sends the sum of its masks, and the guest removes them: its result is
sum_r (r + 1) * colmeans(host features ** 2), which depends only on the data and `rounds`, while
every intermediate value depends on the seeded RNG state -- so a resume that lost, repeated or
re-drew anything shows up in the result.

Per round r (iteration r):
  1. host  -> guest  masked_sum   masked_vector, shape (k,)   k = the host's feature count
  2. guest -> host   ack          plain_control, no array, meta {"round": r}
Once, after the last round:
  1. host  -> guest  mask_total   aggregate, shape (k,)

Checkpoints follow the resume rule (docs/components.md): a party saves iteration r only after
all of round r's sends and receives, with everything its later sends depend on (the host's RNG
state and mask sum, the guest's running sums). Missing feature values count as 0.
"""

from __future__ import annotations

from pydantic import Field

from fedflow.components.base import ComponentDescriptor, ComponentParams, InputSpec
from fedflow.protocol import Protocol, array_rule, control_rule


class IterSumParams(ComponentParams):
    rounds: int = Field(default=5, ge=1, le=1_000_000)
    seed: int = Field(default=0, ge=0)
    round_delay_s: float = Field(default=0.0, ge=0.0, le=60.0)
    """Pause after each round (tests use it to kill a party mid-run)."""


ITER_SUM_PROTOCOL = Protocol(
    component_type="iter_sum",
    description="test component: masked per-round sums, host to guest",
    dims={"k": "number of features at the sending host"},
    messages=(
        array_rule(
            "masked_sum",
            "host",
            "guest",
            "masked_vector",
            1,
            "(k,)",
            "(r + 1) * column means + mask",
            per_iteration=True,
        ),
        control_rule("ack", "guest", "host", 2, "the guest added round r"),
        array_rule(
            "mask_total", "host", "guest", "aggregate", 1, "(k,)", "the sum of the host's masks"
        ),
    ),
)


ITER_SUM = ComponentDescriptor(
    name="iter_sum",
    description="test component: N rounds of masked sums host -> guest, checkpointed per round",
    entry="fedflow.components.iter_sum.component:run",
    roles=("guest", "host"),
    params=IterSumParams,
    inputs=(InputSpec("data", description="the host's features (the guest's are unused)"),),
    protocol=ITER_SUM_PROTOCOL,
)
