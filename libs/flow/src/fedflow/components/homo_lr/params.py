"""homo_lr's parameters (light: pydantic only, read by the pipeline validator)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from fedflow.components.base import ComponentParams


class HomoLrParams(ComponentParams):
    rounds: int = Field(default=10, ge=1, le=10_000)
    """Aggregation rounds (each: every client trains locally, then one secure sum)."""
    local_epochs: int = Field(default=1, ge=1, le=1_000)
    batch_size: int = Field(default=32, ge=1)
    learning_rate: float = Field(default=0.1, gt=0.0)
    learning_rate_decay: float = Field(default=1.0, gt=0.0, le=1.0)
    """The learning-rate schedule: every client's local steps in round r (from 0) take
    learning_rate * learning_rate_decay ** r (1.0: a constant rate)."""
    alpha: float = Field(default=0.0, ge=0.0)
    """L2 penalty (alpha / 2) * ||w||^2 in every local step (the intercept is not penalised)."""
    seed: int = Field(default=0, ge=0)
    """Seeds each client's batch order: (seed, round, client id)."""
    early_stop: bool = False
    tol: float = Field(default=1e-4, ge=0.0)
    """With early_stop: stop when the aggregated loss of the global model improves by less than
    this from one round to the next."""
    update_bound: float = Field(default=16.0, ge=1.0, le=2.0**20)
    """Fixed-point range: every coordinate of a client's model delta (and its loss) is clipped
    to [-update_bound, update_bound] before quantisation; clipped coordinates are counted
    (metric clipped_coordinates). docs/homo_lr.md gives the precision this leaves."""
    clip_norm: float | None = Field(default=None, gt=0.0)
    """Scale each client's model delta down to this L2 norm when it is longer (works under
    secure aggregation: each client clips its own update; counted as clipped_updates)."""
    proximal_mu: float = Field(default=0.0, ge=0.0)
    """FedProx (Li et al. 2020): every local step also minimises (mu / 2) ||w - w_global||^2,
    which keeps a client's model near the round's global model (0: plain local SGD)."""
    server_optimizer: Literal["sgd", "adam", "yogi"] = "sgd"
    """How the aggregator applies the round's mean update (Reddi et al. 2021): sgd
    w + server_learning_rate * delta (1.0: FedAvg); adam / yogi: FedAdam / FedYogi."""
    server_learning_rate: float = Field(default=1.0, gt=0.0)
    server_beta1: float = Field(default=0.9, ge=0.0, lt=1.0)
    server_beta2: float = Field(default=0.99, ge=0.0, lt=1.0)
    server_tau: float = Field(default=1e-3, gt=0.0)
    """FedAdam / FedYogi's adaptivity (the second moment starts at tau^2)."""
    min_summed_updates: int = Field(default=1, ge=1, le=10_000)
    """The fewest other clients' updates the aggregator may learn only as a sum with a client's
    own. The guest aggregating for one host learns that host's update exactly (1), so a host
    that must not be exposed asks for 2 or more (its policy: components.homo_lr.bounds.
    min_summed_updates.min); the job then refuses that layout at start, and every client
    refuses to unmask a round whose survivors would sum fewer updates (docs/homo_lr.md)."""
    round_timeout_s: float = Field(default=120.0, gt=0.0, le=86_400.0)
    """How long the aggregator waits at each step of a round before it treats the clients it
    has not heard from as dropped for that round."""
    aggregator_wait_s: float = Field(default=7_200.0, gt=0.0, le=30 * 86_400.0)
    """How long in all a client waits for the aggregator's next message before its task fails
    (from the start or restart of its task). The first wait for each message is the worker's
    receive timeout; while the aggregator is away (its worker down, restarting) the client
    waits again with exponential backoff (1 s doubling to 30 s, each logged
    aggregator_unreachable). The default is the scheduler's task timeout."""
    dp_noise_multiplier: float = Field(default=0.0, ge=0.0, le=1_000.0)
    """Differential privacy (0: off): each client adds Gaussian noise of standard deviation
    dp_noise_multiplier * clip_norm to its clipped model delta before masking it (privacy.py;
    needs clip_norm; the loss is then not sent, so no early stopping). The metric dp_epsilon
    is the client-level epsilon at dp_delta after each round (Renyi DP accountant)."""
    dp_central_noise_multiplier: float = Field(default=0.0, ge=0.0, le=1_000.0)
    """Central differential privacy (0: off; excludes dp_noise_multiplier): each client sends
    its model delta clipped to clip_norm, unweighted (every client counts once), and the
    aggregator adds Gaussian noise of standard deviation dp_central_noise_multiplier *
    clip_norm to the securely aggregated sum before it averages (privacy.py; trusts the
    aggregator to add it; the loss is not sent, so no early stopping). The metric dp_epsilon
    is the client-level epsilon at dp_delta after each round, by the same accountant."""
    dp_delta: float = Field(default=1e-5, gt=0.0, lt=1.0)
    """The delta at which dp_epsilon is reported."""
    aggregation: Literal["fedavg", "fedavg_clipped", "median", "trimmed_mean", "krum"] = "fedavg"
    """How the round's updates are combined. fedavg (default): FedAvg weighted by rows over
    secure aggregation, the aggregator learns only the sum. The others need every client's
    update in the clear (no secure aggregation: the aggregator sees each single update, so a
    client whose min_summed_updates is above 1 refuses them): fedavg_clipped, FedAvg of the
    updates each clipped by the aggregator to server_clip_norm (recorded); median, the
    coordinate-wise median; trimmed_mean, the coordinate-wise mean after dropping
    floor(trim_fraction * n) of the largest and of the smallest values; krum, the update with
    the smallest sum of squared distances to its n - krum_byzantine - 2 nearest (math.py)."""
    trim_fraction: float = Field(default=0.2, ge=0.0, lt=0.5)
    """trimmed_mean: the fraction of the n updates dropped at each end of every coordinate
    (floor(trim_fraction * n) each side; 0.2 of 10 clients: 2 each side)."""
    krum_byzantine: int = Field(default=1, ge=0, le=1_000)
    """krum: f, the Byzantine clients it tolerates; a round needs n >= 2f + 3 updates."""
    server_clip_norm: float | None = Field(default=None, gt=0.0)
    """The aggregator scales every visible update's model delta down to this L2 norm when it
    is longer, before the rule combines them, and records it (metric server_clipped, the count,
    and server_clip_factor_<party> per clipped client; event update_clipped). Needs an
    aggregation other than fedavg (under secure aggregation clip_norm, each client's own,
    is the clipping there is); fedavg_clipped needs it."""

    @model_validator(mode="after")
    def _dp_needs_clipping(self) -> HomoLrParams:
        local, central = self.dp_noise_multiplier > 0.0, self.dp_central_noise_multiplier > 0.0
        if local and central:
            raise ValueError(
                "dp_noise_multiplier (each client adds noise) and dp_central_noise_multiplier "
                "(the aggregator adds noise) exclude each other: choose one"
            )
        name = "dp_noise_multiplier" if local else "dp_central_noise_multiplier"
        if local or central:
            if self.clip_norm is None:
                raise ValueError(
                    f"{name} needs clip_norm: the noise is scaled to the clipping bound, which "
                    "is what bounds a client's influence"
                )
            if self.early_stop:
                raise ValueError(
                    f"{name} and early_stop do not go together: with differential privacy the "
                    "clients do not send their loss, which early stopping needs"
                )
        if self.aggregation != "fedavg" and (local or central):
            raise ValueError(
                f"{name} needs aggregation fedavg: differential privacy here is built on the "
                f"secure sum, and aggregation {self.aggregation} sends every update in the clear"
            )
        if self.aggregation == "fedavg" and self.server_clip_norm is not None:
            raise ValueError(
                "server_clip_norm needs an aggregation that shows the aggregator each update "
                "(fedavg_clipped, median, trimmed_mean, krum): under secure aggregation it sees "
                "only the sum; use clip_norm, which each client applies to its own update"
            )
        if self.aggregation == "fedavg_clipped" and self.server_clip_norm is None:
            raise ValueError("aggregation fedavg_clipped needs server_clip_norm (the bound)")
        if central and self.clip_norm is not None and self.clip_norm > self.update_bound:
            raise ValueError(
                f"dp_central_noise_multiplier needs clip_norm ({self.clip_norm:g}) at most "
                f"update_bound ({self.update_bound:g}): each client sends its clipped delta "
                "unweighted, and every coordinate of it must fit the fixed-point range"
            )
        return self


class HomoLrPredictParams(ComponentParams):
    threshold: float = Field(default=0.5, ge=0.0, le=1.0)
