"""hetero_lr / hetero_lr_predict: vertical logistic regression, guest + host, under Paillier.

The guest holds the labels y in {0, 1} and features X_g (plus an intercept column); the host
holds other features X_h of the same rows (aligned by an upstream psi). Each party has its OWN
Paillier key pair; there is no third party. docs/hetero_lr.md states the protocol, what each
party learns per iteration and why the minimum batch size is what it is.

The exchange is shown with the Taylor approximation sigma(z) ~ 0.5 + z / 4 (z = u_g + u_h,
u = X w), whose residual is d = v + u_h / 4 with v = u_g / 4 + 0.5 - y (u_h: the sum over
hosts). Per mini-batch (the same rows at every party: the permutation of epoch e is drawn from
(seed, e)), iteration t:

  order 1  guest -> host   residual              [[v]]_G                 (b, c) ciphertexts
  order 1  host  -> guest  host_scores           [[u_h]]_H               (b, c)
  order 2  host  -> guest  host_gradient         [[X_h^T d + R_h]]_G     (k_h, c) k_h checked
  order 2  guest -> host   guest_gradient        [[A^T u_h + R_g]]_H     (k_g2, c)
           A = [X_g, y', u_g] (y' = 2y - 1): the guest's gradient term and two loss aggregates
  order 3  guest -> host   host_gradient_masked  X_h^T d + R_h           (k_h, p) residue limbs
  order 3  host  -> guest  guest_gradient_masked A^T u_h + R_g           (k_g2, p)
  order 3  host  -> guest  host_score_sq         sum_i u_h,i^2           () aggregate
  order 4  guest -> host   epoch_end             {"stop": bool}          (last batch of an epoch)

With several hosts, each host also sends the others [[u_h / 4]]_G (`peer_scores`, order 1) and
adds theirs to [[v]]_G, so its residual covers every host's scores; and sends the guest
[[sum over the others of u_h . u_h' / 4]]_G (`host_cross`, order 2), the cross term of the loss.
The guest runs the exchange above with each host under that host's key.

The sigmoid (docs/hetero_lr.md): `sigmoid: auto`, the default, uses with ONE host the
separable fit sigmoid(u_g + u_h) ~ a_0(u_g) + sum_j a_j(u_g) b_j(u_h) instead of the Taylor
line (the residual and host_scores messages then carry 3 stacked vectors; the same views as
below), and the Taylor line with several hosts; `sigmoid: taylor` or `separable` pins one.

Options: `multi_class: true` trains one-vs-rest with every class in the same exchange: each
per-batch message carries one lane per class (lanes.py: the per-row messages the rows of the
classes still training, lane after lane; the answers every class's lane, Enc(0) for a class
that stopped early, which keeps its weights); a `validate_data` input makes each host send
its partial scores of the validation rows after each epoch (`validate_scores`), for the
guest's validate_loss and early stopping (`patience`, `min_delta`), whose best epoch every
party keeps.

Prediction (hetero_lr_predict), once per host:

  host -> guest  host_partial_scores  u_h = X_h w_h per row   (m,) float64, kind partial_score

in plaintext: the guest learns the host's partial score of every row it scores (it could derive
it from the final scores it is meant to get, z - u_g); the host receives nothing.

Masks R are integers added to the fixed-point mantissas (not to floats): R is uniform over
[0, 2^(bits(bound) + 80)), so a masked value hides the mantissa statistically (2^-80) and the
owner recovers it exactly. Every ciphertext derived from the other party's ciphertexts is
re-randomised (`obfuscate`) before it goes back to that party.

Resume (docs/components.md): state = weights, the peer keys, the party's secrets (its Paillier
private key and mask seed) SEALED (ctx.secret, fedflow.sealing: AES-GCM under a key derived
from the party's checkpoint key, which is not in the database), epoch loss so far, iteration.
The same key pair must come back on resume: the peer keeps encrypting under our public key and the
pending ciphertexts below were made with it, so a fresh key pair would not do. Masks come
from SHAKE-256(mask seed, tag, iteration), so a redone iteration re-sends the same plaintexts.
Ciphertexts carry fresh encryption randomness, so before a ciphertext is first sent it is
written into the checkpoint ("pending"), and a redone iteration re-sends those exact bytes (the
outbox refuses a different payload under the same id).

Layout (docs/components.md, the worked example): this `__init__` declares the two component
types (light: no numpy or fedcrypto); params.py, protocol.py the declarations; math.py the
arithmetic (numpy only; the plaintext reference the tests compare with); guest.py, host.py the
orchestration of training over fedflow.kit; session.py what both roles share (keys, state,
the class lanes' progress); lanes.py the lane layout of the multi-class messages; packing.py
several classes' residuals in one plaintext (multi_class, sigmoid taylor, one host);
predict.py hetero_lr_predict.
"""

from __future__ import annotations

from fedflow.components.base import ComponentDescriptor, InputSpec, LabelRule
from fedflow.components.hetero_lr.params import HeteroLrParams, HeteroLrPredictParams
from fedflow.components.hetero_lr.protocol import (
    HETERO_LR_PREDICT_PROTOCOL,
    HETERO_LR_PROTOCOL,
)

BINARY_LABELS = LabelRule("binary", (0.0, 1.0))
"""hetero_lr's guest labels: 0 or 1."""
CLASS_LABELS = LabelRule("classes")
"""hetero_lr's guest labels with multi_class: true: class labels 0, 1, 2, ... (one model per
class, that class against the rest)."""

HETERO_LR = ComponentDescriptor(
    name="hetero_lr",
    description="vertical logistic regression under Paillier (guest + host, no arbiter)",
    entry={
        "guest": "fedflow.components.hetero_lr.guest:train",
        "host": "fedflow.components.hetero_lr.host:train",
    },
    roles=("guest", "host"),
    params=HeteroLrParams,
    inputs=(
        InputSpec("data", description="rows aligned across parties (psi output)"),
        InputSpec(
            "validate_data",
            required=False,
            description="validation rows aligned across parties (e.g. data_split's validate): "
            "per-epoch validate_loss / validate_auc and early stopping (patience, min_delta); "
            "reveals the host's partial scores of these rows to the guest each epoch",
            reveals="host",
            reveals_what="the host's partial scores of every validation row go to the guest "
            "in plaintext, once per epoch",
        ),
    ),
    outputs=("model",),
    protocol=HETERO_LR_PROTOCOL,
    labels={"guest": BINARY_LABELS},
    labels_by_param=(("multi_class", True, {"guest": CLASS_LABELS}),),
)

HETERO_LR_PREDICT = ComponentDescriptor(
    name="hetero_lr_predict",
    description="scores of a hetero_lr model: the guest gets sigmoid(u_g + u_h) per row",
    entry={
        "guest": "fedflow.components.hetero_lr.predict:guest",
        "host": "fedflow.components.hetero_lr.predict:checked_host",
    },
    roles=("guest", "host"),
    params=HeteroLrPredictParams,
    inputs=(
        InputSpec("model", description="this party's part of a hetero_lr model"),
        InputSpec("data", description="rows aligned across parties"),
    ),
    outputs=("data",),
    protocol=HETERO_LR_PREDICT_PROTOCOL,
)
