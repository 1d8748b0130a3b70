"""Differential privacy for homo_lr / homo_nn: clipped updates plus Gaussian noise, added by each
client before its contribution is masked (local) or by the aggregator to the securely
aggregated sum (central), and the privacy accounting.

Mechanism (per client u, per round it takes part in). The client clips its model delta to L2
norm C (`clip_norm`) and adds z * C * N(0, I) (z = `dp_noise_multiplier`) before it scales by
its weight p_u, quantises and masks it:

    x_u = (p_u * (clip(delta_u, C) + z C N(0, I)),  0,  p_u)

Neighbouring inputs are any two data sets of that one client (its rows replaced by any others):
clipped deltas then differ by at most 2C in L2, so one round is the Gaussian mechanism with
sensitivity 2C and standard deviation zC. The guarantee holds for each client against everyone
who sees anything derived from its update: the aggregator (even without secure aggregation),
the other clients, the final model (post-processing). It does not rely on the other clients
being honest or staying in the round. The loss coordinate is not sent (0): the global model's
loss on a client's rows is data-dependent and unbounded, so with DP the aggregated loss and
early stopping are off. The row weight p_u is sent as without DP (a client's row count is
treated as public, as the aggregator learns the round's total anyway).

Central mode (`dp_central_noise_multiplier` z): each client sends its clipped delta unweighted,

    x_u = (clip(delta_u, C),  0,  1)

so that every client's influence on the sum is the same bound (FedAvg's row weights would make
it depend on each client's row count, which the aggregator does not know and which would itself
need protecting). The aggregator adds z * C * N(0, I) to the recovered sum of the deltas and
divides by the number of clients in the sum, n (DP-FedAvg, McMahan et al., "Learning
Differentially Private Recurrent Language Models", ICLR 2018, every client in every round):

    w_{r+1} = w_r + (sum_u clip(delta_u, C) + z C N(0, I)) / n

One client's rows replaced move the sum by at most 2C, so a round is again the Gaussian
mechanism with sensitivity 2C and standard deviation zC, the same accounting as local mode, but
with the noise added once instead of by every client: the model carries noise z C / n per
coordinate instead of about z C / sqrt(n). The trust differs: the guarantee holds against whoever
sees the model (the other clients, the final model) only if the aggregator adds the noise; the
aggregator itself sees the noiseless sum (under secure aggregation the sum only; a guest that
aggregates subtracts its own and sees the other clients' sum). Participation (n) is not hidden.
The aggregator's noise comes from a fresh random key each round (`secrets`); nothing leaves
before the noised model is checkpointed, so a restarted aggregator redoes the round with a new
draw that was never released.

Accounting: Renyi DP of the Gaussian mechanism (Mironov, "Renyi Differential Privacy", CSF
2017): order alpha costs alpha * (2C)^2 / (2 (zC)^2) = 2 alpha / z^2 per round, summed over the
T rounds the client took part in (no subsampling: every client trains every round), converted
to (epsilon, delta) with Balle et al. 2020 / Canonne-Kamath-Steinke 2020 (Proposition 12):

    epsilon = min_alpha  T * 2 alpha / z^2 + log((alpha - 1) / alpha) - (log delta + log alpha)
                                                                          / (alpha - 1)

`exact_epsilon` gives the tight value for the same mechanism (T Gaussian mechanisms compose to
one with mu = sqrt(T) * 2 / z, Dong-Roth-Su's Gaussian DP, converted with Balle-Wang 2018's
formula); the RDP figure is the one reported, and never below it.

Noise: 64-bit words from AES-256-CTR (fedcrypto.secagg.expand_mask) under a key the client
derives from its own never-revealed secure-aggregation secret (`SecAggClient.derive_secret`):
unpredictable to the aggregator, and the same after a restart from the round's checkpoint, so
a restarted client re-sends the same masked bytes. Gaussians by Box-Muller in float64; the
known floating-point weaknesses of textbook Gaussian sampling (Mironov, CCS 2012) are not
addressed here.
"""

from __future__ import annotations

import math
import secrets
from dataclasses import dataclass
from typing import Final

import numpy as np
from fedcrypto.secagg import SecAggClient, expand_mask

from fedflow.components.homo_lr.math import EXTRA, Floats
from fedflow.components.homo_lr.params import HomoLrParams

SENSITIVITY_PER_CLIP: Final = 2.0
"""Replace-one-client adjacency: two clipped deltas differ by at most 2C."""
NOISE_LABEL: Final = b"fedmq.homo_lr/dp-noise"
"""What the noise key derived from a client's secure-aggregation secret is for."""
_ALPHAS: Final = 1.0 + np.logspace(-3, 5, 4000)
"""Renyi orders searched (1.001 .. 1e5): dense enough that the minimum is within 0.1%."""


def gaussian(key: bytes, length: int) -> Floats:
    """`length` standard normal values from a 32-byte key (AES-CTR words, Box-Muller)."""
    half = (length + 1) // 2
    words = expand_mask(key, 2 * half, np.uint64)
    # 53 random bits -> uniform in (0, 1]; the +1 keeps log away from 0.
    uniform = ((words >> np.uint64(11)).astype(np.float64) + 1.0) / 2.0**53
    radius = np.sqrt(-2.0 * np.log(uniform[:half]))
    angle = 2.0 * np.pi * uniform[half:]
    return np.concatenate([radius * np.cos(angle), radius * np.sin(angle)])[:length]


def privatize(vector: Floats, clip: float, noise_multiplier: float, key: bytes) -> Floats:
    """A client's contribution (p * clipped delta, p * loss, p) with z * C * N(0, I) added to
    the delta (scaled by p like it) and the loss withheld (module docstring)."""
    out = np.array(vector, dtype=np.float64)
    d = out.size - EXTRA
    p = out[-1]
    out[:d] += p * noise_multiplier * clip * gaussian(key, d)
    out[d] = 0.0
    return out


def rdp_epsilon(noise_multiplier: float, rounds: int, delta: float) -> float:
    """epsilon at `delta` after `rounds` rounds of the mechanism (module docstring), by RDP;
    inf when noise_multiplier is 0, 0 for no rounds."""
    _check(noise_multiplier, rounds, delta)
    if rounds == 0:
        return 0.0
    if noise_multiplier == 0.0:
        return math.inf
    a = _ALPHAS
    rdp = rounds * a * SENSITIVITY_PER_CLIP**2 / (2.0 * noise_multiplier**2)
    eps = rdp + np.log((a - 1.0) / a) - (math.log(delta) + np.log(a)) / (a - 1.0)
    return max(0.0, float(np.min(eps)))


def exact_epsilon(noise_multiplier: float, rounds: int, delta: float) -> float:
    """The tight epsilon at `delta` for the same composition (mu-GDP, Balle-Wang conversion)."""
    _check(noise_multiplier, rounds, delta)
    if rounds == 0:
        return 0.0
    if noise_multiplier == 0.0:
        return math.inf
    mu = math.sqrt(rounds) * SENSITIVITY_PER_CLIP / noise_multiplier

    def delta_at(eps: float) -> float:
        return _phi(-eps / mu + mu / 2) - math.exp(eps) * _phi(-eps / mu - mu / 2)

    if delta_at(0.0) <= delta:
        return 0.0
    lo, hi = 0.0, 1.0
    while delta_at(hi) > delta:
        lo, hi = hi, 2 * hi
    for _ in range(100):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if delta_at(mid) > delta else (lo, mid)
    return hi


def _phi(x: float) -> float:
    return 0.5 * math.erfc(-x / math.sqrt(2.0))


def _check(noise_multiplier: float, rounds: int, delta: float) -> None:
    if not (noise_multiplier >= 0.0 and math.isfinite(noise_multiplier)):
        raise ValueError(f"noise multiplier must be finite and >= 0, got {noise_multiplier}")
    if rounds < 0:
        raise ValueError(f"rounds must be >= 0, got {rounds}")
    if not 0.0 < delta < 1.0:
        raise ValueError(f"delta must be in (0, 1), got {delta}")


def unweighted(vector: Floats) -> Floats:
    """Central mode's contribution (clipped delta, 0, 1) from a client's (p * clipped delta,
    p * loss, p): every client counts once and the loss is withheld (module docstring)."""
    out = np.array(vector, dtype=np.float64)
    d = out.size - EXTRA
    out[:d] /= out[-1]
    out[d] = 0.0
    out[-1] = 1.0
    return out


def noised_sum(total: Floats, clip: float, noise_multiplier: float, key: bytes) -> Floats:
    """The aggregated sum of central mode's contributions with z * C * N(0, I) added to the
    deltas' sum (the last two coordinates, loss 0 and the client count, unchanged)."""
    out = np.array(total, dtype=np.float64)
    d = out.size - EXTRA
    out[:d] += noise_multiplier * clip * gaussian(key, d)
    return out


@dataclass(frozen=True)
class DpSettings:
    """A job's DP settings (params dp_noise_multiplier or dp_central_noise_multiplier,
    clip_norm, dp_delta); None when off. `central`: the aggregator adds the noise."""

    noise_multiplier: float
    clip: float
    delta: float
    central: bool = False

    def epsilon(self, rounds: int) -> float:
        return rdp_epsilon(self.noise_multiplier, rounds, self.delta)

    def apply(self, vector: Floats, client: SecAggClient) -> Floats:
        """What a client masks: `vector` privatized with noise keyed by this round's `client`
        (local), or unweighted for the aggregator's noise (central; module docstring)."""
        if self.central:
            return unweighted(vector)
        key = client.derive_secret(NOISE_LABEL)
        return privatize(vector, self.clip, self.noise_multiplier, key)

    def finish(self, total: Floats) -> Floats:
        """What the aggregator averages: the secure sum, noised in central mode (a fresh key:
        module docstring), as it is in local mode."""
        if not self.central:
            return total
        return noised_sum(total, self.clip, self.noise_multiplier, secrets.token_bytes(32))

    def noise_on_mean(self, clients: int) -> float:
        """Standard deviation of the noise per coordinate of the round's mean delta when
        `clients` took part (central: z C / n; local, equal row counts: z C / sqrt(n))."""
        scale = self.noise_multiplier * self.clip
        return scale / clients if self.central else scale / math.sqrt(clients)


def settings(params: HomoLrParams) -> DpSettings | None:
    """The job's DP settings, None when both noise multipliers are 0 (the params check
    clip_norm and that at most one is set)."""
    if params.clip_norm is None:
        return None
    if params.dp_central_noise_multiplier > 0.0:
        return DpSettings(
            params.dp_central_noise_multiplier, params.clip_norm, params.dp_delta, central=True
        )
    if params.dp_noise_multiplier > 0.0:
        return DpSettings(params.dp_noise_multiplier, params.clip_norm, params.dp_delta)
    return None
