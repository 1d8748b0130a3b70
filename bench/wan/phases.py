"""Where a large message's time goes at the sending gateway (issue #19): bench/wan/run.py's
gateway-to-gateway transfer through the emulator, with the sending gateway's relay timed per
message and per phase.

Phases of one message, on the thread that relays it (named, so it shows whether messages
overlap):
- "wait": from the previous message's end to this one's start (the bus reassembling and
  checking the next chunked body, or the queue being empty);
- "sign": decode the envelope, hash and sign it, build the wire bytes;
- "stripe": until the peer has ACKed every striped chunk (the body on the wire, plus one round
  trip for the last chunk's ACK);
- "ack": the DATA frame naming the transfer until its ACK (half a round trip each way, and the
  receiving gateway's verify and publish-with-confirm).

    .venv/bin/python bench/wan/phases.py --size-mib 256 --rtt-ms 80 --loss-pct 1
Prints one line per message and the medians. Needs root, like run.py.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import run as bench
from fedgateway import link, relay
from fedgateway.allocator import keep_freed_memory

_events: list[tuple[float, str, str]] = []
_lock = threading.Lock()


def _timed(owner: Any, name: str, label: str) -> None:
    """Record (time, thread, label>) and (time, thread, label<) around owner.name."""
    original: Callable[..., Any] = getattr(owner, name)

    def timed(*args: Any, **kwargs: Any) -> Any:
        thread = threading.current_thread().name
        with _lock:
            _events.append((time.monotonic(), thread, label + ">"))
        try:
            return original(*args, **kwargs)
        finally:
            with _lock:
                _events.append((time.monotonic(), thread, label + "<"))

    setattr(owner, name, timed)


def _phases() -> list[dict[str, Any]]:
    """Per message, in order: its thread and the seconds of each phase."""
    rows: list[dict[str, Any]] = []
    marks: dict[str, float] = {}
    last_end: float | None = None
    for at, thread, label in _events:
        marks[label] = at
        if label == "relay<":
            rows.append(
                {
                    "thread": thread,
                    "wait": marks["relay>"] - last_end if last_end is not None else None,
                    "sign": marks["sign<"] - marks["relay>"],
                    "stripe": marks["stripe<"] - marks["stripe>"],
                    "ack": at - marks["stripe<"],
                    "total": at - marks["relay>"],
                }
            )
            last_end = at
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mib", type=int, default=256)
    parser.add_argument("--message-mib", type=int, default=32)
    parser.add_argument("--outstanding", type=int, default=4)
    parser.add_argument("--rtt-ms", type=float, default=80)
    parser.add_argument("--loss-pct", type=float, default=1.0)
    parser.add_argument("--prefix", default="fwp")
    args = parser.parse_args()
    why = bench.missing_requirements()
    if why is not None:
        sys.exit(why)
    keep_freed_memory()  # as python -m fedgateway does (the receiver's process does too)
    _timed(relay.OutboundRelay, "_relay", "relay")
    _timed(relay, "sign_envelope", "sign")
    _timed(link.PeerLink, "_stripe", "stripe")
    run_args = argparse.Namespace(
        size_mib=args.size_mib,
        message_mib=args.message_mib,
        outstanding=args.outstanding,
        streams=4,
        buffer_mib=16,
        max_seconds=300,
        compress_level=1,
        payload="ciphertext",
        malloc="keep",
        bus_frame_mib=0,
    )
    wan = bench.WanEmulator(args.prefix)
    wan.up(rtt_ms=args.rtt_ms, loss_pct=args.loss_pct)
    try:
        with tempfile.TemporaryDirectory() as tmp:
            mbps, seconds, _, stats = bench.link_transfer(wan, run_args, Path(tmp))
    finally:
        wan.down()
    rows = _phases()
    for i, row in enumerate(rows):
        cells = " ".join(f"{k} {v:.3f}" for k, v in row.items() if k != "thread" and v is not None)
        print(f"message {i}: {cells} (thread {row['thread']})")
    for phase in ("wait", "sign", "stripe", "ack", "total"):
        values = [r[phase] for r in rows if r[phase] is not None]
        if values:
            print(f"median {phase}: {statistics.median(values):.3f} s")
    threads = {r["thread"] for r in rows}
    print(
        f"{mbps:.1f} Mbit/s, {seconds:.1f} s, {stats['cpu_s']} CPU-s; messages relayed on "
        f"{len(threads)} thread(s): {sorted(threads)}"
    )


if __name__ == "__main__":
    main()
