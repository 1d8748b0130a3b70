"""fedbus: one message-bus interface over memory://, amqp:// and pulsar://."""

from fedbus.bus import (
    HEADER_DEAD_REASON,
    HEADER_ORIGINAL_TOPIC,
    BrokerUnavailable,
    Bus,
    BusError,
    Capabilities,
    Delivery,
    Handler,
    Message,
    PublishNotConfirmed,
    Reject,
    RequestRejected,
    RequestTimeout,
    Subscription,
    Unroutable,
)
from fedbus.bus_factory import connect, url_identity

__all__ = [
    "HEADER_DEAD_REASON",
    "HEADER_ORIGINAL_TOPIC",
    "BrokerUnavailable",
    "Bus",
    "BusError",
    "Capabilities",
    "Delivery",
    "Handler",
    "Message",
    "PublishNotConfirmed",
    "Reject",
    "RequestRejected",
    "RequestTimeout",
    "Subscription",
    "Unroutable",
    "connect",
    "url_identity",
]
