"""bench/serving/h4_attribute.py: a CPU profile's self time grouped by what the code is
(issue #15, session 10, helper H4): the AMQP client (aiormq, pamqp, aio_pika, asyncio), fedbus,
pydantic, OpenTelemetry, Redis, the database, the serving handlers, ...

    .venv/bin/python -m bench.serving.h4_attribute FILE.prof [--requests N]

FILE is what a service writes with FEDMQ_PROFILE_OUT (fedcommon.profiling); with --requests,
each group's share is also given in profiled ms per request (cProfile inflates Python code
several times: read the shares).
"""

from __future__ import annotations

import argparse
import pstats
from collections import defaultdict

GROUPS = (
    # (group, substrings of the code's file path or name; the first group that matches wins)
    ("AMQP client (aiormq, pamqp, aio_pika)", ("/aiormq/", "/pamqp/", "/aio_pika/")),
    ("asyncio / uvloop / uvicorn", ("/asyncio/", "uvloop", "/uvicorn/", "/h11/", "/starlette/")),
    ("fedbus", ("/fedbus/",)),
    ("pydantic (envelopes)", ("pydantic", "/fedschemas/")),
    ("OpenTelemetry spans", ("/opentelemetry/", "/fedcommon/tracing")),
    ("logging (structlog)", ("/structlog/", "/logging/", "/fedcommon/logging")),
    ("Prometheus", ("/prometheus_client/", "/fedcommon/metrics")),
    ("Redis client", ("/redis/",)),
    ("database (SQLAlchemy, psycopg)", ("/sqlalchemy/", "/psycopg")),
    ("numpy", ("/numpy/", "numpy.")),
    ("json", ("/json/", "json.")),
    ("serving handlers", ("/fedserving/",)),
    ("threading, queues, locks", ("threading.py", "/queue.py", "_thread.", "lock")),
    ("imports (start-up)", ("importlib", "<frozen", "builtins.exec")),
)


def group_of(func: tuple[str, int, str]) -> str:
    where = f"{func[0]}:{func[2]}"
    for name, needles in GROUPS:
        if any(n in where for n in needles):
            return name
    return "other"


def attribute(path: str) -> dict[str, float]:
    """Seconds of self time per group; a builtin's (isinstance, len, a lock's acquire, ...)
    goes to its callers' groups, shared by their numbers of calls."""
    stats = pstats.Stats(path)
    found: dict[str, float] = defaultdict(float)
    for func, (_cc, _nc, tottime, _ct, callers) in stats.stats.items():  # type: ignore[attr-defined]
        if func[0] == "~" and callers and not func[2].startswith("<built-in method builtins.exec"):
            calls = sum(c[1] if isinstance(c, tuple) else c for c in callers.values())
            for caller, c in callers.items():
                share = (c[1] if isinstance(c, tuple) else c) / max(calls, 1)
                found[group_of(caller)] += tottime * share
            continue
        found[group_of(func)] += tottime
    return dict(sorted(found.items(), key=lambda kv: -kv[1]))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("files", nargs="+")
    parser.add_argument("--requests", type=int, default=0)
    args = parser.parse_args()
    for path in args.files:
        found = attribute(path)
        total = sum(found.values())
        print(f"{path}: {total:.2f} s profiled CPU")
        for name, seconds in found.items():
            per = f"  {seconds * 1000 / args.requests:6.2f} ms/request" if args.requests else ""
            print(f"  {100 * seconds / total:5.1f}%  {seconds:7.2f} s{per}  {name}")


if __name__ == "__main__":
    main()
