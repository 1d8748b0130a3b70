"""homo_lr / homo_lr_predict: horizontal logistic regression, FedAvg over secure aggregation.

Every client (the guest and each host) holds its own rows with the same feature columns and a
label 0/1. The aggregator is the arbiter when the pipeline names one (it has no data: the guest
tells it the model's length, `model_shape`), else the guest, which is then also a client
(docs/homo_lr.md). Round r (iteration r), with the guest aggregating:

  order 1  guest -> host  global_model      w_r (meta features: a digest of the guest's column
                                            names, checked by each host in round 0; final)
           every client trains local_epochs of SGD from w_r on its own rows and forms
           x = (p (w_local - w_r), p loss(w_r), p), p = rows / 2^24 (math.py)
  order 2  host -> guest  sa_keys           two fresh X25519 public keys (or: withdraw, reason)
  order 3  guest -> host  sa_directory      U1's keys
  order 4  host -> guest  sa_shares         encrypted Shamir shares for each other client
  order 5  guest -> host  sa_routed         the shares addressed to this client
  order 6  host -> guest  sa_masked         x quantised mod 2^64, plus self and pairwise masks
  order 7  guest -> host  sa_unmask         survivors, dropped
  order 8  host -> guest  sa_unmask_shares  shares of the survivors' seeds / dropped mask keys

(fedcrypto.secagg, Bonawitz et al. 2017.) The guest recovers sum x over the survivors and sets
w_{r+1} = w_r + sum p delta / sum p: FedAvg weighted by rows. A host not heard from within
round_timeout_s at a step leaves the round (its masks are recovered from the others' shares)
and is told so under the next tag ("excluded"), so it waits for the next round and joins it.
After the last round (or early stopping on the aggregated loss) the guest sends the final
model (final: true) and every client outputs the same model.

Checkpoints after every round and within a round (a client's secure-aggregation state sealed,
resume.py; the aggregator's dropout decisions), so a restarted task re-sends the same bytes.
Options: FedProx (proximal_mu), FedAdam / FedYogi (server_optimizer), norm clipping,
differential privacy (dp_noise_multiplier: each client's clipped update plus Gaussian noise
before masking; dp_central_noise_multiplier: the aggregator's noise on the secure sum of clipped,
unweighted updates; epsilon reported per round; privacy.py), min_summed_updates, and robust
aggregation (aggregation median / trimmed_mean / krum / fedavg_clipped with server_clip_norm):
then there is no secure aggregation, each client sends its x in the clear instead (order 2
`plain_update`) and the aggregator combines the visible updates (math.combine_plain), so a
client whose min_summed_updates is above 1 refuses (docs/homo_lr.md).

Layout: this `__init__` (declarations, light), params.py, protocol.py, math.py (numpy only;
the plaintext references), wire.py (secagg messages as FederationData), learner.py (the model
as the rounds see it: homo_lr's logistic regression; homo_nn's network is another), client.py
(local training, the host's role), aggregator.py (the guest's role), resume.py, privacy.py,
predict.py.
"""

from __future__ import annotations

from fedflow.components.base import ComponentDescriptor, InputSpec, LabelRule
from fedflow.components.homo_lr.params import HomoLrParams, HomoLrPredictParams
from fedflow.components.homo_lr.protocol import HOMO_LR_PREDICT_PROTOCOL, HOMO_LR_PROTOCOL

BINARY_LABELS = LabelRule("binary", (0.0, 1.0))

HOMO_LR = ComponentDescriptor(
    name="homo_lr",
    description=(
        "horizontal logistic regression: FedAvg over secure aggregation (the arbiter aggregates "
        "when the pipeline names one, else the guest; guest and hosts are the clients)"
    ),
    entry={
        "guest": "fedflow.components.homo_lr.aggregator:guest",
        "host": "fedflow.components.homo_lr.client:train",
        "arbiter": "fedflow.components.homo_lr.aggregator:train",
    },
    roles=("guest", "host", "arbiter"),
    params=HomoLrParams,
    inputs=(
        InputSpec(
            "data",
            description="this client's own rows (same columns everywhere)",
            roles=("guest", "host"),
        ),
        InputSpec(
            "validate_data",
            required=False,
            description="this client's validation rows (data's columns): early_stop watches "
            "the global model's loss on every client's, securely summed (all clients or none)",
            roles=("guest", "host"),
        ),
    ),
    outputs=("model",),
    protocol=HOMO_LR_PROTOCOL,
    labels={"guest": BINARY_LABELS, "host": BINARY_LABELS},
)

HOMO_LR_PREDICT = ComponentDescriptor(
    name="homo_lr_predict",
    description="scores of a homo_lr model: each party scores its own rows, nothing crosses",
    entry="fedflow.components.homo_lr.predict:run",
    roles=("guest", "host"),
    params=HomoLrPredictParams,
    inputs=(
        InputSpec("model", description="the shared homo_lr model"),
        InputSpec("data", description="this party's rows to score"),
    ),
    outputs=("data",),
    protocol=HOMO_LR_PREDICT_PROTOCOL,
)
