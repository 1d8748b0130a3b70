"""CPU seconds the gateway's own code spends on one large ciphertext message (issue #19).

The WAN benchmark (run.py) is CPU-bound on this shared machine, so its Mbit/s move with the
load. This measures what the code costs instead, in CPU time of this process (time.process_time,
which other processes' load barely moves), for one `--mib` MiB federation.data ciphertext:

- sender: decode the envelope taken off out.<peer> and sign it (OutboundRelay's work);
- receiver: the STRIPE frames of the signed body (as they come off the socket: prefix + 1 MiB
  chunk each) decoded and stored, the transfer taken and reassembled as the DATA frame the
  relay gets, and the Verifier's checks (decode, canonical bytes, Ed25519).

No network, TLS, broker or bus: those are the same whatever the gateway does. To compare two
versions of the gateway, run this once with each on PYTHONPATH, alternating, e.g. with the
tree before a change extracted by `git archive <commit> services/gateway/src | tar -x -C old`:

    .venv/bin/python bench/wan/cpu_path.py
    PYTHONPATH=old/services/gateway/src .venv/bin/python bench/wan/cpu_path.py

Prints one JSON line: the gateway module used and the CPU seconds of each repetition.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import tempfile
import time
from pathlib import Path

import fedgateway
from fedgateway import framing, pki, stripe
from fedgateway.relay import Signer, sign_envelope
from fedgateway.verify import InMemoryFinishedAttempts, KeyRing, Verifier
from fedschemas import FederationData, PartyRef, decode_envelope, encode_envelope, new_envelope

SENDER, RECEIVER = "9999", "10000"
CHUNK = 1 << 20


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mib", type=int, default=32)
    parser.add_argument("--repeat", type=int, default=4)
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp())
    pki.init_ca(root / "ca", "t")
    identity = pki.ensure_party(root / "ca", SENDER, root / SENDER)
    ring = KeyRing(identity.ca_cert)
    ring.add_certificate(identity.certificate.pem, party_id=SENDER)
    verifier = Verifier(
        party_id=RECEIVER,
        keyring=ring,
        finished=InMemoryFinishedAttempts(),
        routes={"federation.": "svc.worker"},
        clock_window=dt.timedelta(hours=1),
        max_envelope_bytes=1 << 30,
    )
    signer = Signer(identity.signing_key, identity.key_id)
    env = new_envelope(
        FederationData(
            kind="ciphertext_vector",
            blob=os.urandom(args.mib << 20),
            blob_format="fedcrypto.paillier.v1",
        ),
        job_id="j",
        component="c",
        task_id="t",
        attempt=0,
        source=PartyRef(party_id=SENDER, role="guest"),
        destination=PartyRef(party_id=RECEIVER, role="host"),
        tag="g",
        iteration=0,
        seq=0,
        created_at=dt.datetime.now(dt.UTC),
    )
    body = encode_envelope(env)
    # The version before the receiver's changes had no held_size and no DataFrame.pieces.
    pieces_api = hasattr(framing, "held_size")
    sender_s: list[float] = []
    receiver_s: list[float] = []
    for _ in range(args.repeat):
        started = time.process_time()
        wire = sign_envelope(decode_envelope(body), signer)
        sender_s.append(time.process_time() - started)

        total = len(wire)
        count = -(-total // CHUNK)
        size = framing.stripe_chunk_bytes(total, count)
        frames = [
            framing.encode_stripe_prefix(1, i, count, total) + wire[i * size : (i + 1) * size]
            for i in range(count)
        ]
        started = time.process_time()
        store = stripe.StripeStore(1 << 31)
        for frame in frames:
            store.add(framing.decode_stripe(frame, max_total=1 << 30))
        got = store.take(1, total)
        assert got is not None
        if pieces_api:
            data = framing.DataFrame(
                seq=1, message_id=env.message_id, headers={}, body=b"", pieces=got
            ).whole()
        else:  # what that version's LinkServer did with a finished transfer
            prefix = framing.encode_data_prefix(1, env.message_id, {})
            data = framing.decode_data(prefix + got)  # type: ignore[operator]
        verifier.check(data.body, message_id=data.message_id, peer_party=SENDER)
        receiver_s.append(time.process_time() - started)
    print(
        json.dumps(
            {
                "gateway": fedgateway.__file__,
                "mib": args.mib,
                "sender_cpu_s": [round(x, 3) for x in sender_s],
                "receiver_cpu_s": [round(x, 3) for x in receiver_s],
                "load": os.getloadavg(),
            }
        )
    )


if __name__ == "__main__":
    main()
