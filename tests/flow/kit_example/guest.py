"""masked_dot at the guest: encrypt y, decrypt the host's masked product for it."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

from fedflow.kit.he import HeParty, open_secrets
from fedflow.kit.resume import Resumable
from fedflow.kit.threads import crypto_threads
from fedflow.tables import Table

if TYPE_CHECKING:
    from fedflow.context import ComponentContext

KEY_BITS = 512  # a test: short keys


def run(ctx: ComponentContext) -> Mapping[str, Table]:
    table = ctx.input("data")
    assert table.labels is not None
    host = ctx.parties["host"][0]
    with crypto_threads(ctx) as (executor, _):
        key, seed = open_secrets(
            ctx, "masked_dot.secrets", key_bits=KEY_BITS, insecure_short_keys=True
        )
        he = HeParty(ctx, key, seed, executor=executor)
        meta = he.exchange_keys([host], min_bits=KEY_BITS, insecure_short_keys=True)
        ctx.federation.bind_dims(m=table.rows, k=int(meta[host]["features"]))
        resume = Resumable(ctx, lambda: {})
        resume.send_ciphertexts("encrypted_y", 0, lambda: (he.encrypt(table.labels), {}), to=host)
        he.decrypt_for_peer("product", 0, "product_masked", host)
        resume.save(0)
    return {}
