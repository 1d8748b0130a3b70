"""CPU accounting for the bus benchmarks: who burnt how much CPU per message.

Snapshots /proc before and after a phase; the difference, divided by the messages, gives CPU
milliseconds per message for this process, its waited-for children, RabbitMQ (beam.smp),
PostgreSQL and everything else on the machine (other users of a shared box included).
Linux only.
"""

from __future__ import annotations

import os
import resource
from dataclasses import dataclass

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def _process_ticks() -> dict[int, tuple[str, int]]:
    """pid -> (command name, user+system CPU ticks) of every process we can read."""
    found: dict[int, tuple[str, int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as f:
                raw = f.read().decode("ascii", "replace")
        except OSError:
            continue
        # Field 2 is "(comm)" and may itself hold spaces or parentheses: split after the last ')'.
        comm = raw[raw.index("(") + 1 : raw.rindex(")")]
        fields = raw[raw.rindex(")") + 2 :].split()
        found[int(entry)] = (comm, int(fields[11]) + int(fields[12]))
    return found


def _machine_busy_ticks() -> int:
    with open("/proc/stat") as f:
        cpu = [int(x) for x in f.readline().split()[1:]]
    idle = cpu[3] + cpu[4]  # idle + iowait
    return sum(cpu[:8]) - idle


@dataclass
class CpuSnapshot:
    own: float
    children: float
    processes: dict[int, tuple[str, int]]
    machine: int

    @classmethod
    def take(cls) -> CpuSnapshot:
        me = resource.getrusage(resource.RUSAGE_SELF)
        kids = resource.getrusage(resource.RUSAGE_CHILDREN)
        return cls(
            own=me.ru_utime + me.ru_stime,
            children=kids.ru_utime + kids.ru_stime,
            processes=_process_ticks(),
            machine=_machine_busy_ticks(),
        )


def cpu_split(before: CpuSnapshot, after: CpuSnapshot, messages: int) -> dict[str, float]:
    """CPU milliseconds per message by component between two snapshots.

    consumer: this process (consumer buses, handlers, inbox); publisher: the publisher child
    (counted once it was waited for); rabbitmq: beam.smp; postgres: every postgres process
    (a backend that exited between the snapshots is missed); other: everything else the
    machine ran meanwhile (other users of this shared box included)."""

    def group_ticks(name: str) -> int:
        total = 0
        for pid, (comm, ticks) in after.processes.items():
            if comm != name:
                continue
            start = before.processes.get(pid)
            total += ticks - (start[1] if start is not None and start[0] == comm else 0)
        return total

    per_msg = 1000.0 / messages
    split = {
        "consumer": (after.own - before.own) * per_msg,
        "publisher": (after.children - before.children) * per_msg,
        "rabbitmq": group_ticks("beam.smp") / CLOCK_TICKS * per_msg,
        "postgres": group_ticks("postgres") / CLOCK_TICKS * per_msg,
    }
    machine = (after.machine - before.machine) / CLOCK_TICKS * per_msg
    split["other"] = max(0.0, machine - sum(split.values()))
    split["machine"] = machine
    return {k: round(v, 3) for k, v in split.items()}
