"""The declared messages of horizontal preprocessing over secure aggregation (light: read by the
pipeline validator, the audit service and the protocol guard): homo_feature_scale and
homo_feature_binning share them.

Each step r (iteration r) is homo_lr's round with `stats` in place of `global_model`: the
aggregator (the arbiter when the pipeline names one, else the guest) sends what the clients
need for step r (order 1), then one Bonawitz secure sum of the clients' vectors (orders 2-8,
homo_lr's sa_* messages, whose vector length differs from step to step). The last `stats`
(meta final) carries the result. With an arbiter, the guest first tells it the column count
and digest (`model_shape`, once), or that it applies a given model (meta apply: nothing more
follows).
"""

from __future__ import annotations

from dataclasses import replace

from fedflow.components.homo_lr.protocol import secagg_protocol
from fedflow.protocol import NONE, MessageRule, Protocol, ProtocolRole, array_rule


def _stats_rules() -> tuple[MessageRule, ...]:
    pairs: tuple[tuple[ProtocolRole, ProtocolRole], ...] = (
        ("guest", "host"),
        ("arbiter", "guest"),
        ("arbiter", "host"),
    )
    return tuple(
        array_rule(
            "stats",
            agg,
            client,
            "aggregate",
            1,
            "(*,)",
            "what the clients need for step r (the global means, the grid), or with meta "
            "final the result (the scaling, the split points); meta features: a digest of "
            "the column names",
            per_iteration=True,
        )
        for agg, client in pairs
    )


def preprocessing_protocol(component_type: str, what: str) -> Protocol:
    """homo_lr's secure-aggregation steps (its sa_* rules, any vector length), `stats` for
    homo_lr's global_model, and the guest's model_shape for an arbiter; homo_lr's other
    messages left out."""
    base = secagg_protocol(component_type, "model")
    kept = []
    for rule in base.messages:
        if not (rule.tag.startswith("sa_") or rule.tag == "model_shape"):
            continue  # homo_lr's model messages
        if rule.shape not in (NONE, "any"):
            rule = replace(rule, shape="(*,)")  # a step's vector: its own length
        if rule.tag == "model_shape":
            rule = replace(
                rule,
                shape=NONE,
                description="with an arbiter: meta features (the column count) and digest (of "
                "the column names) before step 0, or meta apply: the guest applies a given "
                "model and no step follows",
            )
        kept.append(rule)
    return Protocol(
        component_type=component_type,
        description=(
            f"{what} from Bonawitz secure aggregation (fedcrypto.secagg) of per-client "
            "statistics: the aggregator (the arbiter when the pipeline names one, else the "
            "guest) learns only sums over the clients of each step, and who took part"
        ),
        messages=(*_stats_rules(), *kept),
    )


HOMO_FEATURE_SCALE_PROTOCOL = preprocessing_protocol(
    "homo_feature_scale", "global mean and standard deviation per column"
)
HOMO_FEATURE_BINNING_PROTOCOL = preprocessing_protocol(
    "homo_feature_binning", "global quantile or equal-width split points per column"
)
