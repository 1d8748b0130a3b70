"""hetero_secureboost / hetero_secureboost_predict: vertical gradient-boosted trees
(SecureBoost, Cheng et al. 2019), guest + one or several hosts, under the guest's Paillier key.

The guest holds the labels, the only key pair, and every tree's structure; a host holds its
features, its bin edges and the thresholds of the splits it won. docs/secureboost.md says what
each party learns per node. Per tree t (iteration t * max_depth + d at depth d):

  once     guest -> host   public_key       the guest's key
  once     host  -> guest  host_features    meta: the host's feature count k_h
  d = 0    guest -> host   gh               [[q_g | q_h | 1]] per row (one plaintext, cipher.py)
  order 1  guest -> host   positions        each row's open node at depth d (-1: in a leaf)
  order 2  host  -> guest  histogram_cells  per cell of its direct nodes: empty, sent or left out
  order 2  host  -> guest  histograms       [[sent cells]] of its direct nodes, compressed
  order 3  guest -> host   splits           per node: the winning id of this host or -1
                                            (slot * max_bin + bin; meta ties if slots tie)
  order 4  host  -> guest  instance_split   left / right of the rows at the nodes it won
  order 5  host  -> guest  validate_directions  (validate_data) its nodes' sides per row
  order 6  guest -> host   boost_stop       (early stopping) at a round's end: stop or go on

The guest builds its own histograms in plaintext, decrypts the hosts', subtracts (sibling =
parent - child), evaluates every candidate of every party (math.best_split) and tells the
winner. A host lists its features in a secret order per tree (math.host_feature_order), so
the guest knows a host's split by an opaque slot only; on tied slots the host picks.
At depth max_depth the open nodes are leaves; the guest computes their weights and the
next tree's gradients. With complete_secure the first round uses the guest's features only
(nothing is sent). A level with no open node ends the tree early (positions with nodes 0).

Prediction (hetero_secureboost_predict), once per host:

  host -> guest  host_directions  for every row and each of the host's split nodes: left?

Resume (docs/components.md): both parties checkpoint after every level. The guest's state is
the trees, the margins, the level being grown and the hosts' parent histograms (plaintext
integers); its private key is a sealed task secret. The gh and histogram ciphertexts carry
fresh randomness, so they are recorded in the checkpoint before they leave
(fedflow.kit.resume) and a redone level re-sends those bytes. A host re-reads the tree's gh
from its durable mailbox.

Layout: this `__init__` declares the two component types (light); params.py, protocol.py the
declarations; math.py the arithmetic and the plaintext reference; sketch.py the mergeable
quantile sketch; cipher.py the ciphertext arithmetic; guest.py, host.py the orchestration;
predict.py hetero_secureboost_predict.
"""

from __future__ import annotations

from fedflow.components.base import ComponentDescriptor, InputSpec, LabelRule
from fedflow.components.hetero_secureboost.params import (
    HeteroSecureBoostParams,
    HeteroSecureBoostPredictParams,
)
from fedflow.components.hetero_secureboost.protocol import (
    HETERO_SECUREBOOST_PREDICT_PROTOCOL,
    HETERO_SECUREBOOST_PROTOCOL,
)

HETERO_SECUREBOOST = ComponentDescriptor(
    name="hetero_secureboost",
    description="vertical gradient-boosted trees (SecureBoost) under the guest's Paillier key",
    entry={
        "guest": "fedflow.components.hetero_secureboost.guest:train",
        "host": "fedflow.components.hetero_secureboost.host:train",
    },
    roles=("guest", "host"),
    params=HeteroSecureBoostParams,
    inputs=(
        InputSpec("data", description="rows aligned across parties (psi output)"),
        InputSpec(
            "validate_data",
            required=False,
            description="validation rows aligned across parties (e.g. data_split's validate): "
            "per-round validate_loss and early stopping; reveals to the guest which side of "
            "each host split every validation row falls on",
            reveals="host",
            reveals_what="for every validation row, the side of each of the host's split "
            "nodes goes to the guest in plaintext, once per tree",
        ),
    ),
    outputs=("model",),
    protocol=HETERO_SECUREBOOST_PROTOCOL,
    # Declared, so a pipeline's reader refuses labels that do not fit before psi runs (3
    # classes with binary:logistic failed after psi with "needs labels 0 or 1").
    labels={"guest": LabelRule("binary", (0.0, 1.0))},
    labels_by_param=(
        ("objective", "multi:softmax", {"guest": LabelRule("classes")}),
        ("objective", "reg:squarederror", {"guest": LabelRule("numeric")}),
    ),
)

HETERO_SECUREBOOST_PREDICT = ComponentDescriptor(
    name="hetero_secureboost_predict",
    description="scores of a hetero_secureboost model: the guest walks the trees",
    entry={
        "guest": "fedflow.components.hetero_secureboost.predict:guest",
        "host": "fedflow.components.hetero_secureboost.predict:host",
    },
    roles=("guest", "host"),
    params=HeteroSecureBoostPredictParams,
    inputs=(
        InputSpec("model", description="this party's part of a hetero_secureboost model"),
        InputSpec("data", description="rows aligned across parties"),
    ),
    outputs=("data",),
    protocol=HETERO_SECUREBOOST_PREDICT_PROTOCOL,
)
