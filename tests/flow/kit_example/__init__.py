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
from fedflow.kit import HE_DIMS, ciphertext_rule, masked_rule, public_key_rules
from fedflow.protocol import Protocol

PROTOCOL = Protocol(
    component_type="masked_dot",
    description="X^T y across two parties: the host's X, the guest's y, masked decryption",
    dims={**HE_DIMS, "m": "rows", "k": "the host's feature count"},
    messages=(
        *public_key_rules(),
        ciphertext_rule("encrypted_y", "guest", "host", 1, "m", decrypt=False),
        ciphertext_rule("product", "host", "guest", 2, "k"),
        masked_rule("product_masked", "guest", "host", "k"),
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
