"""hetero_lr's parameters (light: pydantic only, read by the pipeline validator)."""

from __future__ import annotations

import warnings
from typing import Any, Literal

from pydantic import Field, model_validator

from fedflow.components.base import ComponentParams

MIN_BATCH_SIZE = 64
"""The floor of min_batch_size (math.py) whatever the feature counts: a pipeline asking for
less is refused at submission, before any party reads its data."""
SECURE_KEY_BITS = 2048

RUNTIME_KNOBS = ("threads", "prefetch_threads")
"""Parameters that used to size this party's thread pools. A party's CPU use is its own
decision, not the pipeline's (written by whichever party initiates the job): they are now the
worker's settings (FEDMQ_WORKER_COMPONENT_THREADS, FEDMQ_WORKER_PREFETCH_THREADS) and the
standalone runner's options. A pipeline that still sets them stays valid; they are ignored."""


class HeteroLrParams(ComponentParams):
    epochs: int = Field(default=10, ge=1, le=10_000)
    batch_size: int = Field(default=1024, ge=MIN_BATCH_SIZE)
    """Rows per mini-batch (the last batch of an epoch takes the remainder); at least
    min_batch_size(k_g, k_h), refused otherwise: below MIN_BATCH_SIZE already at submission,
    the part that depends on the feature counts when the task starts."""
    learning_rate: float = Field(default=0.15, gt=0.0)
    decay: float = Field(default=0.0, ge=0.0)
    """Learning rate at iteration t: learning_rate / sqrt(1 + decay * t)."""
    alpha: float = Field(default=0.01, ge=0.0)
    """L2 penalty (alpha / 2) * ||w||^2 (the intercept is not penalised)."""
    tol: float = Field(default=1e-4, ge=0.0)
    """Early stopping: stop when the epoch's Taylor loss improves by less than this."""
    early_stop: bool = True
    seed: int = Field(default=0, ge=0)
    """Seeds the batch order (both parties must use the same)."""
    sigmoid: Literal["auto", "taylor", "separable"] = "auto"
    """The default protocol's sigmoid: "taylor" (0.5 + z / 4, one ciphertext per row each
    way), "separable" (sigmoid(u_g + u_h) ~ a_0(u_g) + a_1(u_g) b_1(u_h) + a_2(u_g)
    b_2(u_h), three ciphertexts per row each way, one host only; docs/hetero_lr.md) or
    "auto": separable with one host, taylor with several (math.resolve_sigmoid)."""
    multi_class: bool = False
    """One-vs-rest over the guest's class labels (0, 1, 2, ...): one binary model per class,
    all trained in the same batches, one exchange per batch carrying every class (a class
    that stops early keeps its weights while the others go on); the model has a weight
    column per class and hetero_lr_predict predicts the class whose model scores highest."""
    patience: int = Field(default=0, ge=0, le=10_000)
    """Early stopping on the `validate_data` input's log loss: stop after this many epochs
    in a row without an improvement of at least `min_delta` over the best epoch, and output
    the best epoch's weights (0: off; needs validate_data)."""
    min_delta: float = Field(default=0.0, ge=0.0)
    """The smallest decrease of the validation loss that counts as an improvement."""
    reveal_host_scores: bool = Field(
        default=False,
        json_schema_extra={
            "policy": "reveals",
            "reveals": "host",
            "what": "the host's per-row partial scores go to the guest in plaintext",
        },
    )
    """Faster, less private mode: each host sends the guest its per-sample partial scores u_h
    in PLAINTEXT every iteration, so the guest uses the exact sigmoid and only the hosts'
    gradients go through Paillier (docs/hetero_lr.md). Off by default."""
    threads: int | None = Field(default=None, ge=0, le=64, deprecated=True)
    """Deprecated, ignored: the party's runtime options (RUNTIME_KNOBS)."""
    prefetch_threads: int | None = Field(default=None, ge=0, le=64, deprecated=True)
    """Deprecated, ignored: the party's runtime options (RUNTIME_KNOBS)."""
    key_bits: int = Field(default=2048, ge=256, le=8192, json_schema_extra={"policy": "key_bits"})
    """Every party's Paillier key length; each party's policy sets its own floor
    (fedflow.policy, min_key_bits)."""
    insecure_short_keys: bool = Field(
        default=False, json_schema_extra={"policy": "insecure_short_keys"}
    )
    """Allow keys shorter than 2048 bits (tests only; refused unless the party's policy
    allows it)."""

    @model_validator(mode="after")
    def _short_keys_are_explicit(self) -> HeteroLrParams:
        # Caught at submission rather than when the first party generates its key.
        if self.key_bits < SECURE_KEY_BITS and not self.insecure_short_keys:
            raise ValueError(
                f"key_bits {self.key_bits} is below {SECURE_KEY_BITS}: such keys are insecure "
                "(set insecure_short_keys: true for tests, and the parties' policies must "
                "allow it)"
            )
        return self

    @model_validator(mode="before")
    @classmethod
    def _warn_runtime_knobs(cls, data: Any) -> Any:
        if isinstance(data, dict):
            given = [k for k in RUNTIME_KNOBS if data.get(k) is not None]
            if given:
                warnings.warn(
                    f"hetero_lr params {', '.join(given)} are ignored: threads are the party's "
                    "own setting (worker: FEDMQ_WORKER_COMPONENT_THREADS / "
                    "FEDMQ_WORKER_PREFETCH_THREADS; standalone: --threads / "
                    "--prefetch-threads); remove them from the pipeline",
                    DeprecationWarning,
                    stacklevel=2,
                )
        return data


class HeteroLinrParams(HeteroLrParams):
    """hetero_linr's parameters: hetero_lr's, without reveal_host_scores (the squared loss's
    residual is exact under encryption; there is nothing to trade privacy for). `tol` applies
    to the mean squared loss (z - y)^2 / 2; `patience` and `min_delta` to the validate_data
    input's."""

    reveal_host_scores: Literal[False] = False
    multi_class: Literal[False] = False
    sigmoid: Literal["taylor"] = "taylor"


class HeteroLrPredictParams(ComponentParams):
    threshold: float = Field(default=0.5, ge=0.0, le=1.0)
