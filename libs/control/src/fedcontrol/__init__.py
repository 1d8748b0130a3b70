"""fedcontrol: a party's control plane as seen by its clients (REST API, CLI, tests).

Commands travel over the bus (request/reply), never into a service's database:
`SchedulerClient` sends the scheduler's (jobs, grants, job metrics and logs, on
`svc.scheduler.rpc`), `DataClient` the data service's (tables, on `svc.data.rpc`, served by the
party's workers). Refusals become exceptions that carry their HTTP status.
fedcontrol.server.CommandServer is the serving side both servers share.
"""

from fedcontrol.client import (
    DATA_RPC_COMPONENT,
    DATA_RPC_TOPIC,
    HTTP_STATUS,
    RPC_COMPONENT,
    SCHEDULER_RPC_TOPIC,
    CommandFailed,
    DataClient,
    DataCommandFailed,
    DataUnavailable,
    SchedulerClient,
    SchedulerCommandFailed,
    SchedulerUnavailable,
    ServiceUnavailable,
    TableUpload,
    command_envelope,
)

__all__ = [
    "DATA_RPC_COMPONENT",
    "DATA_RPC_TOPIC",
    "HTTP_STATUS",
    "RPC_COMPONENT",
    "SCHEDULER_RPC_TOPIC",
    "CommandFailed",
    "DataClient",
    "DataCommandFailed",
    "DataUnavailable",
    "SchedulerClient",
    "SchedulerCommandFailed",
    "SchedulerUnavailable",
    "ServiceUnavailable",
    "TableUpload",
    "command_envelope",
]
