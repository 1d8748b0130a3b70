"""masked_dot at the host: [[X^T y]] from [[y]], masked; the guest decrypts, the host unmasks."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

import numpy as np
from fedcrypto import encrypted_dot
from fedflow.kit.he import HeParty, open_secrets
from fedflow.kit.resume import Resumable
from fedflow.kit.threads import crypto_threads
from fedflow.tables import Table

if TYPE_CHECKING:
    from fedflow.context import ComponentContext

KEY_BITS = 512  # a test: short keys


def run(ctx: ComponentContext) -> Mapping[str, Table]:
    table = ctx.input("data")
    x = np.nan_to_num(table.features)
    guest = ctx.parties["guest"][0]
    with crypto_threads(ctx) as (executor, _):
        key, seed = open_secrets(
            ctx, "masked_dot.secrets", key_bits=KEY_BITS, insecure_short_keys=True
        )
        he = HeParty(ctx, key, seed, executor=executor)
        he.exchange_keys([guest], min_bits=KEY_BITS, insecure_short_keys=True, features=x.shape[1])
        ctx.federation.bind_dims(m=table.rows, k=x.shape[1])
        y = he.recv_ciphertexts("encrypted_y", 0, guest, he.peer_keys[guest], table.rows)
        resume = Resumable(ctx, lambda: {})
        sent = resume.send_ciphertexts(
            "product",
            0,
            lambda: he.masked(encrypted_dot(x, y, executor=executor), "product", 0),
            to=guest,
        )
        product = he.unmask(sent, "product_masked", 0, guest, "product")
        resume.save(0)
    return {
        "data": Table(
            ids=np.array(table.feature_names, dtype=np.str_),
            features=product.reshape(-1, 1),
            feature_names=["dot"],
            labels=None,
        )
    }
