"""BusExecutor on the in-memory bus with in-process CryptoReplicas: same results as serial."""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import UTC, datetime

import numpy as np
import pytest
from fedbus import HEADER_DEAD_REASON, Bus, connect
from fedcrypto.paillier import CiphertextError, PrivateKey, PublicKey, generate_keypair
from fedcrypto.paillier import kernels as paillier_kernels
from fedcrypto.paillier.limbs import LimbArray, from_mpz
from fedflow.cryptopool import (
    KERNELS,
    BusExecutor,
    CryptoJobTimeout,
    CryptoReplica,
    NotWhitelisted,
)
from fedschemas import Envelope, PartyRef, encode_envelope, new_envelope
from fedschemas.payloads import CryptoJob

from tests.polling import poll, wait_for_dead_letters

PARTY = "9999"
TOPIC = "svc.crypto"


@pytest.fixture(scope="module")
def keypair() -> tuple[PublicKey, PrivateKey]:
    return generate_keypair(512, insecure_allow_short=True)


@pytest.fixture
def bus(unique_name: str) -> Iterator[Bus]:
    with connect(f"memory://{unique_name}") as b:
        yield b


@pytest.fixture
def replicas(bus: Bus) -> Iterator[list[CryptoReplica]]:
    started = [CryptoReplica(bus, PARTY, replica_id=f"r{i}") for i in range(2)]
    for r in started:
        r.start()
    yield started
    for r in started:
        r.stop()


@pytest.fixture
def pool(bus: Bus, replicas: list[CryptoReplica]) -> Iterator[BusExecutor]:
    ex = BusExecutor(bus, PARTY, replicas=2, timeout_s=60)
    yield ex
    ex.shutdown()


def djn_encryption_inputs(
    pk: PublicKey, count: int, seed: int
) -> tuple[paillier_kernels.ObfuscationSpec, LimbArray, np.ndarray]:
    """k_encrypt's arguments for plaintexts 1..count: the DJN spec and fixed random bytes."""
    spec = pk.obfuscation_spec("djn")
    plain = from_mpz(list(range(1, count + 1)), pk.plain_limbs)
    rand = np.random.default_rng(seed).integers(
        0, 256, size=(count, paillier_kernels.randomness_bytes(spec)), dtype=np.uint8
    )
    return spec, plain, rand


def test_every_whitelisted_name_is_a_fedcrypto_kernel() -> None:
    assert KERNELS
    for name, fn in KERNELS.items():
        assert name.startswith("fedcrypto.paillier.kernels:k_")
        assert getattr(paillier_kernels, name.split(":")[1]) is fn


def test_encryption_on_replicas_decrypts_to_the_serial_encryption_plaintexts(
    keypair: tuple[PublicKey, PrivateKey], pool: BusExecutor
) -> None:
    # Prepare: fresh randomness per call, so ciphertexts differ; plaintexts must not.
    pk, sk = keypair
    values = np.linspace(-50.0, 50.0, 300)
    serial = pk.encrypt(values)

    # Execute
    pooled = pk.encrypt(values, executor=pool, chunk_size=64)

    # Assert
    assert pooled.data.shape == serial.data.shape
    assert np.array_equal(sk.decrypt(pooled), sk.decrypt(serial))
    assert sum(pool.answered_by.values()) == 5


def test_same_randomness_gives_bit_identical_ciphertexts_on_replicas(
    keypair: tuple[PublicKey, PrivateKey], pool: BusExecutor
) -> None:
    # Prepare: the DJN spec (with its 8-bit-window table) and fixed random bytes.
    pk, _ = keypair
    spec, plain, rand = djn_encryption_inputs(pk, 200, seed=7)
    serial = paillier_kernels.k_encrypt(spec, plain, rand)

    # Execute: chunks go through the bus; the table travels as digest + recipe.
    futures = [
        pool.submit(paillier_kernels.k_encrypt, spec, plain[lo : lo + 50], rand[lo : lo + 50])
        for lo in range(0, 200, 50)
    ]
    pooled = np.concatenate([f.result(timeout=60) for f in futures])

    # Assert
    assert np.array_equal(pooled, serial)


def test_private_key_decryption_on_replicas_matches_serial(
    keypair: tuple[PublicKey, PrivateKey], pool: BusExecutor
) -> None:
    pk, sk = keypair
    enc = pk.encrypt(np.arange(-100, 100))

    pooled = sk.decrypt_residues(enc.data, executor=pool, chunk_size=32)

    assert np.array_equal(pooled, sk.decrypt_residues(enc.data))
    assert np.array_equal(sk.decrypt(enc, executor=pool, chunk_size=32), np.arange(-100, 100))


def test_xt_times_encrypted_vector_on_replicas_is_bit_identical_to_serial(
    keypair: tuple[PublicKey, PrivateKey], pool: BusExecutor, replicas: list[CryptoReplica]
) -> None:
    # Prepare: X (m x k) with negative entries (inverted ciphertexts) and [[d]].
    pk, sk = keypair
    rng = np.random.default_rng(3)
    x = rng.normal(size=(600, 4))
    d = pk.encrypt(rng.normal(size=600))

    # Execute: X.T @ [[d]] as [[d]] @ X
    pooled = d.matmul(x, executor=pool)
    serial = d.matmul(x)

    # Assert
    assert np.array_equal(pooled.data, serial.data)
    assert np.allclose(sk.decrypt(pooled), x.T @ sk.decrypt(d), atol=1e-6)
    assert all(r.jobs_done > 0 for r in replicas)


def test_a_kernel_error_reaches_the_caller_as_the_same_exception_type(
    keypair: tuple[PublicKey, PrivateKey], pool: BusExecutor
) -> None:
    pk, _ = keypair
    not_invertible = from_mpz([pk.n * 3], pk.limbs)  # shares the factor n with n^2

    future = pool.submit(paillier_kernels.k_invert, pk.nsquare_bytes, not_invertible)

    with pytest.raises(CiphertextError):
        future.result(timeout=60)


def test_a_function_outside_the_whitelist_is_refused_at_submit(pool: BusExecutor) -> None:
    with pytest.raises(NotWhitelisted):
        pool.submit(np.dot, np.ones(2), np.ones(2))  # type: ignore[arg-type]


def _raw_job(bus: Bus, body: bytes) -> None:
    from fedbus import Message

    bus.publish(Message(topic=TOPIC, body=body, message_id=f"raw-{time.monotonic_ns()}"))


def _job_envelope(job: CryptoJob, party: str = PARTY) -> Envelope:
    ref = PartyRef(party_id=party, role="local")
    return new_envelope(
        job,
        job_id="",
        component="cryptopool",
        task_id="",
        attempt=0,
        source=ref,
        destination=ref,
        tag=f"crypto.job.{job.job_id}",
        iteration=-1,
        seq=0,
        created_at=datetime.now(UTC),
    )


def _forged_job(job_id: str, function: str, args: bytes, reply_topic: str) -> bytes:
    """An encoded crypto.job that skipped the executor's checks (as an attacker would send it)."""
    job = CryptoJob(
        job_id=job_id,
        function=function,
        args=args,
        args_format="fedflow.cryptopool.args.v1",
        reply_topic=reply_topic,
    )
    return encode_envelope(_job_envelope(job))


def _wait_dead(bus: Bus, count: int) -> list[str]:
    """The dead-letter reasons on the job topic once `count` came out."""
    return [d.headers[HEADER_DEAD_REASON] for d in wait_for_dead_letters(bus, TOPIC, count)]


def test_a_job_naming_a_function_outside_the_whitelist_is_answered_refused_and_dead_lettered(
    bus: Bus, pool: BusExecutor
) -> None:
    # Prepare: a job forged past the client-side check, naming os.system.
    job = _forged_job("forged1", "os:system", b"\x91\xa2ls", pool.reply_topic)

    # Execute
    _raw_job(bus, job)

    # Assert
    reasons = _wait_dead(bus, 1)
    assert len(reasons) == 1 and "not a whitelisted crypto kernel" in reasons[0]


def test_garbage_crypto_jobs_are_dead_lettered_and_the_replicas_keep_serving(
    bus: Bus, pool: BusExecutor, keypair: tuple[PublicKey, PrivateKey]
) -> None:
    # Prepare: bytes that are no envelope, and a job whose args are not valid msgpack.
    bad_args = _forged_job(
        "badargs", "fedcrypto.paillier.kernels:k_mul", b"\xc1\xc1\xc1", pool.reply_topic
    )

    # Execute
    _raw_job(bus, b"not an envelope at all")
    _raw_job(bus, bad_args)

    # Assert: both dead-lettered with a reason, and real work still completes.
    reasons = _wait_dead(bus, 2)
    assert len(reasons) == 2
    assert sorted(reasons) == [
        "envelope is not valid msgpack (extra bytes after the message)",
        "not valid msgpack (FormatError)",
    ]
    pk, sk = keypair
    enc = pk.encrypt(np.arange(40), executor=pool, chunk_size=10)
    assert np.array_equal(sk.decrypt(enc), np.arange(40))


def test_a_chunk_nobody_serves_times_out(bus: Bus, keypair: tuple[PublicKey, PrivateKey]) -> None:
    # Prepare: an executor on a topic no replica consumes.
    pk, _ = keypair
    ex = BusExecutor(bus, PARTY, topic="svc.crypto.nobody", timeout_s=0.3)
    try:
        a = from_mpz([2], pk.limbs)

        # Execute
        future = ex.submit(paillier_kernels.k_mul, pk.nsquare_bytes, a, a)

        # Assert
        with pytest.raises(CryptoJobTimeout):
            future.result(timeout=10)
    finally:
        ex.shutdown()


def test_a_chunk_delivered_twice_is_answered_twice_and_the_second_answer_is_ignored(
    keypair: tuple[PublicKey, PrivateKey], pool: BusExecutor, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Prepare: every crypto.job is published twice (what a redelivery looks like to replicas).
    pk, sk = keypair
    send = pool._publisher.send

    def send_twice(topic: str, envelope: Envelope) -> None:
        send(topic, envelope)
        send(topic, envelope)

    monkeypatch.setattr(pool._publisher, "send", send_twice)

    # Execute
    enc = pk.encrypt(np.arange(64), executor=pool, chunk_size=16)

    # Assert: right results from the first answers; the 4 second answers counted and dropped.
    assert np.array_equal(sk.decrypt(enc), np.arange(64))
    poll(lambda: pool.duplicates >= 4, 10)
    assert pool.duplicates == 4
    assert sum(pool.answered_by.values()) == 4


@pytest.fixture
def small_frames(bus: Bus, replicas: list[CryptoReplica]) -> Iterator[BusExecutor]:
    """An executor whose jobs must fit in 48 KiB: big chunks are cut into row slices."""
    ex = BusExecutor(bus, PARTY, replicas=2, timeout_s=60, max_job_bytes=48 * 1024)
    yield ex
    ex.shutdown()


def test_chunks_too_big_for_one_frame_are_cut_by_rows_with_results_identical_to_serial(
    keypair: tuple[PublicKey, PrivateKey], small_frames: BusExecutor
) -> None:
    # Prepare: one chunk of each kind, each far over 48 KiB (128-byte ciphertexts here).
    pk, sk = keypair
    spec, plain, rand = djn_encryption_inputs(pk, 1200, seed=9)
    x = np.random.default_rng(4).normal(size=(1200, 3))
    enc = paillier_kernels.k_encrypt(spec, plain, rand)
    d = pk.encrypt(np.random.default_rng(5).normal(size=1200))

    def jobs() -> int:
        return sum(small_frames.answered_by.values())

    # Execute: a whole call handed to submit, and fedcrypto batches cut into 2 chunks each.
    pooled_enc = small_frames.submit(paillier_kernels.k_encrypt, spec, plain, rand).result(60)
    after_enc = jobs()
    pooled_dec = sk.decrypt_residues(enc, executor=small_frames, chunk_size=600)
    after_dec = jobs()
    pooled_mm = d.matmul(x, executor=small_frames, chunk_size=600)
    after_mm = jobs()

    # Assert: bit-identical to the serial kernels; every call took more jobs than chunks.
    assert np.array_equal(pooled_enc, enc)
    assert np.array_equal(pooled_dec, sk.decrypt_residues(enc))
    assert np.array_equal(pooled_mm.data, d.matmul(x).data)
    assert after_enc > 1 and after_dec - after_enc > 2 and after_mm - after_dec > 2


def test_a_cut_validation_names_the_bad_ciphertext_by_its_index_in_the_whole_batch(
    keypair: tuple[PublicKey, PrivateKey], small_frames: BusExecutor
) -> None:
    pk, _ = keypair
    data = pk.encrypt(np.arange(1000)).data.copy()
    data[917] = 0  # outside (0, n^2)

    future = small_frames.submit(paillier_kernels.k_validate, pk.n_bytes, data)

    with pytest.raises(CiphertextError, match="ciphertext 917 "):
        future.result(timeout=60)


def test_a_job_from_another_party_is_dead_lettered_unrun(
    bus: Bus, pool: BusExecutor, replicas: list[CryptoReplica]
) -> None:
    # Prepare: a well-formed job whose envelope says it comes from party 10000.
    job = CryptoJob(
        job_id="foreign1",
        function="fedcrypto.paillier.kernels:k_mul",
        args=b"\xc7\x00\x01",
        args_format="fedflow.cryptopool.args.v1",
        reply_topic=pool.reply_topic,
    )

    # Execute
    _raw_job(bus, encode_envelope(_job_envelope(job, party="10000")))

    # Assert
    assert _wait_dead(bus, 1) == ["crypto.job from party 10000"]
    assert sum(r.jobs_done for r in replicas) == 0
