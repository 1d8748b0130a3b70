"""masked_dot: the smallest two-party component on fedflow.kit (the docs/components.md example).

The host holds features X, the guest a vector y of the same rows; the host learns X^T y, the
guest learns nothing about X and the host nothing about y beyond X^T y:

  order 1  both           public_key      each party's Paillier public key
  order 1  guest -> host  encrypted_y     [[y]], guest key                    (m, c)
  order 2  host  -> guest product         [[X^T y + R]], guest key; the guest decrypts it
  order 3  guest -> host  product_masked  X^T y + R (residues)                (k, p)

One iteration (t = 0), checkpointed like hetero_lr's. In fedflow it would be one package under
fedflow/components plus one line in `_DESCRIPTORS`; the test registers it by hand.
"""

from __future__ import annotations

from fedflow.components.base import ComponentDescriptor, InputSpec, NoParams
from fedflow.kit import HE_DIMS, PAILLIER_KEY_FORMAT
from fedflow.protocol import DecryptRule, MessageRule, Protocol

PROTOCOL = Protocol(
    component_type="masked_dot",
    description="X^T y across two parties: the host's X, the guest's y, masked decryption",
    dims={**HE_DIMS, "m": "rows", "k": "the host's feature count"},
    messages=(
        MessageRule(
            tag="public_key",
            sender="guest",
            receiver="host",
            kinds=("public_key",),
            order=1,
            shape="none",
            blob_formats=(PAILLIER_KEY_FORMAT,),
        ),
        MessageRule(
            tag="public_key",
            sender="host",
            receiver="guest",
            kinds=("public_key",),
            order=1,
            shape="none",
            blob_formats=(PAILLIER_KEY_FORMAT,),
        ),
        MessageRule(
            tag="encrypted_y",
            sender="guest",
            receiver="host",
            kinds=("ciphertext_vector",),
            per_iteration=True,
            order=1,
            shape="(m, c)",
            dtypes=("uint64",),
        ),
        MessageRule(
            tag="product",
            sender="host",
            receiver="guest",
            kinds=("ciphertext_vector",),
            per_iteration=True,
            order=2,
            shape="(k, c)",
            dtypes=("uint64",),
            decrypt=DecryptRule(by="guest"),
        ),
        MessageRule(
            tag="product_masked",
            sender="guest",
            receiver="host",
            kinds=("masked_vector",),
            per_iteration=True,
            order=3,
            shape="(k, p)",
            dtypes=("uint64",),
        ),
    ),
)

MASKED_DOT = ComponentDescriptor(
    name="masked_dot",
    description="X^T y of the host's features and the guest's vector",
    entry={
        "guest": "tests.flow.kit_example.guest:run",
        "host": "tests.flow.kit_example.host:run",
    },
    roles=("guest", "host"),
    params=NoParams,
    inputs=(InputSpec("data"),),
    outputs=("data",),
    protocol=PROTOCOL,
)
