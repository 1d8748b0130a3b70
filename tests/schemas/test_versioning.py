"""Versioning rules: old versions upgrade on the way in; unknown versions are refused."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import ClassVar

import msgpack
import pytest
from fedschemas import (
    Envelope,
    MalformedMessage,
    Payload,
    Upgrade,
    canonical_bytes,
    decode_envelope,
    decode_payload,
    encode_envelope,
    encode_payload,
    payload_type,
    registry,
)


class SampleV1(Payload):
    value: int


class SampleV2(Payload):
    payload_version: ClassVar[int] = 2
    value: float
    unit: str


class SampleV3(Payload):
    payload_version: ClassVar[int] = 3
    millis: float


def _v1_to_v2(old: Payload) -> Payload:
    assert isinstance(old, SampleV1)
    return SampleV2(value=float(old.value), unit="s")


def _v2_to_v3(old: Payload) -> Payload:
    assert isinstance(old, SampleV2)
    return SampleV3(millis=old.value * 1000.0)


@pytest.fixture
def three_versions(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Registers test.sample at version 3 with upgrades from 1 and 2 (undone afterwards)."""
    monkeypatch.setitem(registry._MESSAGE_TYPES, "test.sample", SampleV3)
    monkeypatch.setitem(registry._UPGRADES, ("test.sample", 1), Upgrade(SampleV1, _v1_to_v2))
    monkeypatch.setitem(registry._UPGRADES, ("test.sample", 2), Upgrade(SampleV2, _v2_to_v3))
    yield


def _old_sender(make_envelope: Callable[..., Envelope], version: int, fields: object) -> Envelope:
    """What a sender running an older build puts on the wire."""
    raw = msgpack.packb(fields, use_bin_type=True)
    sent = make_envelope(type="test.sample", schema_version=version, payload=raw)
    return decode_envelope(encode_envelope(sent))


@pytest.mark.usefixtures("three_versions")
def test_a_version_1_message_is_upgraded_step_by_step_to_current(
    make_envelope: Callable[..., Envelope],
) -> None:
    env = _old_sender(make_envelope, 1, {"value": 2})

    decoded = decode_payload(env)

    assert decoded == SampleV3(millis=2000.0)


@pytest.mark.usefixtures("three_versions")
def test_a_version_2_message_takes_only_the_last_step(
    make_envelope: Callable[..., Envelope],
) -> None:
    env = _old_sender(make_envelope, 2, {"value": 0.5, "unit": "s"})

    assert decode_payload(env, SampleV3) == SampleV3(millis=500.0)


@pytest.mark.usefixtures("three_versions")
def test_an_old_payload_is_validated_against_its_own_version(
    make_envelope: Callable[..., Envelope],
) -> None:
    # A v3-shaped payload labelled version 1 is refused by the v1 model.
    env = _old_sender(make_envelope, 1, {"millis": 1.0})

    with pytest.raises(MalformedMessage, match=r"test\.sample payload"):
        decode_payload(env)


@pytest.mark.usefixtures("three_versions")
@pytest.mark.parametrize("version", [0, 4])
def test_versions_without_a_path_to_current_are_refused(
    version: int, make_envelope: Callable[..., Envelope]
) -> None:
    good = encode_envelope(make_envelope(type="test.sample", schema_version=3))
    items = msgpack.unpackb(good, raw=False)
    items[2] = version

    with pytest.raises(MalformedMessage) as caught:
        decode_envelope(msgpack.packb(items, use_bin_type=True))

    assert f"unknown schema version {version} for message type 'test.sample'" in (
        caught.value.reason
    )
    assert "reads [1, 2, 3]" in caught.value.reason


@pytest.mark.usefixtures("three_versions")
def test_senders_send_only_the_current_version() -> None:
    assert payload_type(SampleV1) == "test.sample"
    with pytest.raises(ValueError, match=r"old version of 'test\.sample'"):
        encode_payload(SampleV1(value=1))
    assert encode_payload(SampleV3(millis=1.0))


def test_an_upgrade_that_returns_the_wrong_model_is_a_bug_not_a_bad_message(
    monkeypatch: pytest.MonkeyPatch, make_envelope: Callable[..., Envelope]
) -> None:
    monkeypatch.setitem(registry._MESSAGE_TYPES, "test.sample", SampleV2)
    monkeypatch.setitem(registry._UPGRADES, ("test.sample", 1), Upgrade(SampleV1, lambda old: old))
    env = _old_sender(make_envelope, 1, {"value": 1})

    with pytest.raises(TypeError, match="returned SampleV1, not SampleV2"):
        decode_payload(env)


class Note(Payload):
    text: str


class NoteWithLang(Payload):
    """Note after an optional field was added within version 1."""

    text: str
    lang: str | None = None


def test_an_optional_field_added_within_a_version_reaches_older_readers_while_unused(
    monkeypatch: pytest.MonkeyPatch, make_envelope: Callable[..., Envelope]
) -> None:
    # Prepare: the new build sends; the old build (Note) receives.
    monkeypatch.setitem(registry._MESSAGE_TYPES, "test.note", NoteWithLang)
    unused = encode_payload(NoteWithLang(text="hi"))
    used = encode_payload(NoteWithLang(text="hi", lang="en"))
    monkeypatch.setitem(registry._MESSAGE_TYPES, "test.note", Note)

    # Execute
    received = decode_payload(make_envelope(type="test.note", payload=unused))

    # Assert: unused new field is invisible; a used one needs readers upgraded first.
    assert received == Note(text="hi")
    with pytest.raises(MalformedMessage, match="field 'lang': Extra inputs"):
        decode_payload(make_envelope(type="test.note", payload=used))


@pytest.mark.usefixtures("three_versions")
def test_schema_version_is_covered_by_the_signed_bytes(
    make_envelope: Callable[..., Envelope],
) -> None:
    v2 = make_envelope(type="test.sample", schema_version=2)
    v3 = make_envelope(type="test.sample", schema_version=3)

    assert canonical_bytes(v2) != canonical_bytes(v3)
