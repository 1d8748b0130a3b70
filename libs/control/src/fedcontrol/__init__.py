"""fedcontrol: a party's control plane as seen by its clients (REST API, CLI, tests).

Commands to the party's scheduler travel over the bus (request/reply on `svc.scheduler.rpc`),
never into its database: `SchedulerClient` sends them and turns refusals into exceptions that
carry their HTTP status.
"""

from fedcontrol.client import (
    HTTP_STATUS,
    RPC_COMPONENT,
    SCHEDULER_RPC_TOPIC,
    SchedulerClient,
    SchedulerCommandFailed,
    SchedulerUnavailable,
    command_envelope,
)

__all__ = [
    "HTTP_STATUS",
    "RPC_COMPONENT",
    "SCHEDULER_RPC_TOPIC",
    "SchedulerClient",
    "SchedulerCommandFailed",
    "SchedulerUnavailable",
    "command_envelope",
]
