"""fedschemas.topics: every message type is routed, and the gateway's routes follow the table."""

from __future__ import annotations

import pytest
from fedschemas import MESSAGE_TYPES, topics
from fedschemas.topics import (
    AREAS,
    GATEWAY_ROUTES,
    area_of,
    crosses_sites,
    out_topic,
    topic_for,
)


def test_every_registered_message_type_has_a_topic() -> None:
    # Execute: the area of every type the registry lists
    unrouted = sorted(t for t in MESSAGE_TYPES if area_of(t) not in AREAS)

    # Assert: a type added to the registry without a route fails here, not in production
    assert unrouted == [], "add the area to fedschemas.topics.AREAS"


def test_the_gateway_accepts_from_peers_exactly_the_cross_site_areas() -> None:
    for prefix, topic in GATEWAY_ROUTES.items():
        assert AREAS[prefix.rstrip(".")] == topics.Area(topic, cross_site=True)
    # Party-local work never arrives from another party
    for local in ("crypto.job", "scheduler.request", "control.heartbeat"):
        assert not crosses_sites(local)
        assert not any(local.startswith(p) for p in GATEWAY_ROUTES)


@pytest.mark.parametrize(
    ("message_type", "topic"),
    [
        ("federation.data", "svc.worker"),
        ("demo.ping", "svc.worker"),
        ("task.run", "svc.scheduler"),
        ("job.status", "svc.scheduler"),
        ("scheduler.request", "svc.scheduler.rpc"),
        ("crypto.job", "svc.crypto"),
    ],
)
def test_wire_topic_names_stay_what_deployed_parties_use(message_type: str, topic: str) -> None:
    # The names are on the wire between versions of the same federation: they must not drift.
    assert topic_for(message_type) == topic


def test_the_outbound_topic_names_its_peer() -> None:
    assert out_topic("10000") == "out.10000"


def test_an_unknown_area_has_no_topic() -> None:
    with pytest.raises(KeyError):
        topic_for("nosuch.thing")
    assert not crosses_sites("nosuch.thing")
