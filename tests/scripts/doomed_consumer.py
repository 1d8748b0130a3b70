"""A consumer that holds its first message until it is killed.

argv: bus URL, topic. Prints "subscribed", then "holding <message id>" once a message is in the
handler, which never returns: the test SIGKILLs the process there, before any ack.
"""

from __future__ import annotations

import sys
import time

from fedbus import Delivery, connect


def hold(delivery: Delivery) -> None:
    print("holding", delivery.message_id, flush=True)
    time.sleep(600)


bus = connect(sys.argv[1])
bus.subscribe(sys.argv[2], hold)
print("subscribed", flush=True)
time.sleep(600)
