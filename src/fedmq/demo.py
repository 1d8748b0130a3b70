"""`fedmq demo`: a standalone two-party exchange — the secure gradient step of vertical LR.

Guest (labels, Paillier key) and host (more features of the same customers) compute the host's
gradient g = Xᴴᵀ·d for the guest's residuals d, so that:
- the host sees d only as Paillier ciphertexts [[d]];
- the guest sees g only masked: g + r, r drawn by the host;
- the host learns its own gradient g, nothing about d or the labels beyond it.

Protocol (each arrow is a signed envelope relayed between the parties' brokers):
  guest → host   public_key         the Paillier public key
  guest → host   ciphertext_vector  [[d]]
  host  → guest  ciphertext_vector  [[Xᴴᵀ·d + r]]   (multi-exponentiation, then + r)
  guest → host   masked_vector      Xᴴᵀ·d + r
The host subtracts r. The demo, holding both sides in one process, then checks g against the
plaintext computation.
"""

from __future__ import annotations

import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from fedcrypto import EncryptedVector, PublicKey, encrypted_dot, generate_keypair
from fedschemas import FederationData
from numpy.typing import NDArray
from rich.console import Console
from rich.markup import escape
from rich.table import Table as RichTable

from fedmq.standalone import Party, Standalone
from fedmq.tables import read_table

PUBLIC_KEY_FORMAT = "fedcrypto.paillier_public_key.v1"
VECTOR_FORMAT = "fedcrypto.paillier_vector.v1"
JOB_ID = "demo-gradient"
COMPONENT = "secure_gradient"


@dataclass
class DemoResult:
    rows: int
    host_features: int
    key_bits: int
    max_abs_error: float
    seconds: float
    crossings: list[tuple[str, str, str, str, int]]


Step = Callable[[str], None]


def _guest(
    guest: Party,
    host: Party,
    labels: NDArray[np.float64],
    key_bits: int,
    step: Step,
) -> None:
    fed = guest.federation(JOB_ID, COMPONENT)
    step(f"guest: generating a {key_bits}-bit Paillier key pair")
    public_key, private_key = generate_keypair(key_bits, insecure_allow_short=key_bits < 2048)
    # The first-iteration residual of logistic regression at w = 0: sigmoid(0) - y, averaged.
    residuals = (0.5 - labels) / len(labels)
    step(f"guest: encrypting {len(residuals)} residuals")
    encrypted = private_key.encrypt(residuals)
    fed.send(
        FederationData(
            kind="public_key", blob=public_key.to_bytes(), blob_format=PUBLIC_KEY_FORMAT
        ),
        to=host.ref,
        tag="public_key",
    )
    fed.send(
        FederationData(
            kind="ciphertext_vector", blob=encrypted.to_bytes(), blob_format=VECTOR_FORMAT
        ),
        to=host.ref,
        tag="encrypted_residuals",
    )
    step("guest: waiting for the host's masked, encrypted gradient")
    reply = fed.recv(frm=host.ref, tag="encrypted_masked_gradient")
    assert reply.blob is not None
    masked = private_key.decrypt(EncryptedVector.from_bytes(reply.blob, public_key))
    step("guest: decrypted the masked gradient (the mask hides the host's gradient)")
    fed.send(
        FederationData(kind="masked_vector", array=np.asarray(masked, dtype=np.float64)),
        to=host.ref,
        tag="masked_gradient",
    )


def _host(
    host: Party,
    guest: Party,
    features: NDArray[np.float64],
    step: Step,
    result: dict[str, NDArray[np.float64]],
) -> None:
    fed = host.federation(JOB_ID, COMPONENT)
    key_msg = fed.recv(frm=guest.ref, tag="public_key")
    assert key_msg.blob is not None
    public_key = PublicKey.from_bytes(key_msg.blob, insecure_allow_short=True)
    if public_key.n_length < 2048:
        step(f"host: WARNING the guest's key has only {public_key.n_length} bits")
    vec_msg = fed.recv(frm=guest.ref, tag="encrypted_residuals")
    assert vec_msg.blob is not None
    encrypted = EncryptedVector.from_bytes(vec_msg.blob, public_key)
    step(f"host: computing Xᵀ·[[d]] for {features.shape[0]} x {features.shape[1]} features")
    gradient = encrypted_dot(features, encrypted)
    # Mask: uniform noise much larger than the gradient, fresh per exchange, never sent.
    rng = np.random.default_rng(secrets.randbits(64))
    mask = rng.uniform(-1e3, 1e3, size=features.shape[1])
    # Re-randomise before sending: a result of homomorphic operations is otherwise a
    # deterministic function of [[d]], and the key holder could test guesses about X against it.
    masked = (gradient + mask).obfuscate()
    fed.send(
        FederationData(kind="ciphertext_vector", blob=masked.to_bytes(), blob_format=VECTOR_FORMAT),
        to=guest.ref,
        tag="encrypted_masked_gradient",
    )
    answer = fed.recv(frm=guest.ref, tag="masked_gradient")
    assert answer.array is not None
    result["gradient"] = np.asarray(answer.array, dtype=np.float64) - mask
    step("host: removed its mask: it now holds its own gradient")


def run_demo(
    data_dir: Path,
    workdir: Path,
    *,
    dataset: str = "breast",
    key_bits: int = 2048,
    console: Console | None = None,
) -> DemoResult:
    console = console or Console()
    guest_table = read_table(data_dir / f"{dataset}_hetero_guest.csv")
    host_table = read_table(data_dir / f"{dataset}_hetero_host.csv", label_column=None)
    # Issue #6 puts PSI here; the example files already hold the same ids.
    host_table = host_table.align_to(guest_table.ids)
    assert guest_table.labels is not None
    started = time.perf_counter()
    lock = threading.Lock()

    def step(text: str) -> None:
        with lock:
            console.print(f"[dim]{time.perf_counter() - started:6.2f}s[/dim] {escape(text)}")

    result: dict[str, NDArray[np.float64]] = {}
    errors: list[BaseException] = []
    with Standalone({"9999": "guest", "10000": "host"}, workdir) as world:
        guest, host = world.parties["9999"], world.parties["10000"]
        step(
            f"standalone: guest 9999 ({len(guest_table.ids)} rows, labels) and host 10000 "
            f"({host_table.features.shape[1]} features) on separate in-memory brokers"
        )

        def run(target: Callable[[], None]) -> threading.Thread:
            def wrapped() -> None:
                try:
                    target()
                except BaseException as exc:  # surfaced below, after both sides stop
                    errors.append(exc)

            thread = threading.Thread(target=wrapped, daemon=True)
            thread.start()
            return thread

        threads = [
            run(lambda: _guest(guest, host, guest_table.labels, key_bits, step)),  # type: ignore[arg-type]
            run(lambda: _host(host, guest, host_table.features, step, result)),
        ]
        for thread in threads:
            thread.join()
        crossings = [
            (c.source, c.destination, c.tag, c.kind, c.bytes) for c in world.crossings.entries
        ]
    if errors:
        raise errors[0]
    expected = host_table.features.T @ ((0.5 - guest_table.labels) / len(guest_table.labels))
    error = float(np.max(np.abs(result["gradient"] - expected)))
    return DemoResult(
        rows=len(guest_table.ids),
        host_features=host_table.features.shape[1],
        key_bits=key_bits,
        max_abs_error=error,
        seconds=time.perf_counter() - started,
        crossings=crossings,
    )


def print_result(result: DemoResult, console: Console) -> None:
    table = RichTable(title="What crossed between the parties (signed, verified, recorded)")
    for column in ("from", "to", "tag", "kind", "bytes"):
        table.add_column(column, justify="right" if column == "bytes" else "left")
    for source, destination, tag, kind, size in result.crossings:
        table.add_row(source, destination, tag, kind, f"{size:,}")
    console.print(table)
    console.print(
        f"host gradient ({result.host_features} values) matches the plaintext computation: "
        f"max |error| = {result.max_abs_error:.2e}"
    )
    console.print(
        f"{result.rows} rows, {result.key_bits}-bit Paillier, {result.seconds:.2f} s in all. "
        "No party saw the other's features, labels, residuals or gradient in plaintext."
    )
