"""The one list of fedmq's services, for everything that starts, packages or deploys them.

The local launcher (`fedmq local`), the compose and Kubernetes checks, and the Dockerfile check
read this table instead of keeping their own list; a test fails when docker-compose.yml,
infra/k8s or docker/Dockerfile disagree with it (tests/deploy/test_service_registry.py).

Pure data, standard library only: importing it never imports a service (the settings class is
named by a "module:Class" string and loaded only by `settings_class()`), so the launcher, the
tests and build tooling can read it without the services' dependencies.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
from dataclasses import dataclass
from typing import Any, Final


@dataclass(frozen=True)
class ServiceSpec:
    """One service: how it is named, run, configured, packaged and probed."""

    name: str
    """The service's name everywhere: compose service, Kubernetes workload and container,
    launcher name, log `service` field, and the FEDMQ_<NAME>_ settings prefix."""
    module: str
    """`python -m <module>` runs it."""
    distribution: str
    """Its Python distribution (pip name)."""
    source_dir: str
    """Its package in the repository, as docker/Dockerfile's FEDMQ_PACKAGES lists it."""
    settings: str
    """"module:Class" of its settings (a fedcommon.settings.ServiceSettings subclass)."""
    http_port: int
    """The default port of /healthz and /metrics (the container port in compose and k8s)."""
    other_ports: tuple[int, ...] = ()
    """Further ports the container listens on (the gateway's site link)."""

    @property
    def env_prefix(self) -> str:
        return f"FEDMQ_{self.name.upper()}_"

    @property
    def command(self) -> tuple[str, ...]:
        """The container's command (compose `command`, k8s `command`)."""
        return ("python", "-m", self.module)

    @property
    def ports(self) -> tuple[int, ...]:
        return (*self.other_ports, self.http_port)

    def settings_class(self) -> Any:
        """The settings class (imports the service's package: not for build tooling)."""
        module, _, cls = self.settings.partition(":")
        return getattr(importlib.import_module(module), cls)


# In the order the launcher starts them.
SERVICES: Final[tuple[ServiceSpec, ...]] = (
    ServiceSpec(
        name="gateway",
        module="fedgateway",
        distribution="fedmq-gateway",
        source_dir="./services/gateway",
        settings="fedgateway.settings:GatewaySettings",
        http_port=8081,
        other_ports=(7443,),
    ),
    ServiceSpec(
        name="worker",
        module="fedworker",
        distribution="fedmq-worker",
        source_dir="./services/worker",
        settings="fedworker.settings:WorkerSettings",
        http_port=8083,
    ),
    ServiceSpec(
        name="scheduler",
        module="fedscheduler",
        distribution="fedmq-scheduler",
        source_dir="./services/scheduler",
        settings="fedscheduler.settings:SchedulerSettings",
        http_port=8082,
    ),
    ServiceSpec(
        name="audit",
        module="fedaudit",
        distribution="fedmq-audit",
        source_dir="./services/audit",
        settings="fedaudit.settings:AuditSettings",
        http_port=8084,
    ),
    ServiceSpec(
        name="serving",
        module="fedserving",
        distribution="fedmq-serving",
        source_dir="./services/serving",
        settings="fedserving.settings:ServingSettings",
        http_port=8085,
    ),
)

SERVICE_NAMES: Final[tuple[str, ...]] = tuple(s.name for s in SERVICES)


def service(name: str) -> ServiceSpec:
    """The service called `name`; KeyError naming the known ones otherwise."""
    for spec in SERVICES:
        if spec.name == name:
            return spec
    raise KeyError(f"no service {name!r}; known: {', '.join(SERVICE_NAMES)}")


def missing_modules() -> list[str]:
    """The registered services whose module is not installed here (found, not imported)."""
    return [s.module for s in SERVICES if importlib.util.find_spec(s.module) is None]


if __name__ == "__main__":
    # docker/Dockerfile: `python -m fedcommon.service_registry --check-modules` fails the image
    # build when a registered service was left out of the installed packages.
    if sys.argv[1:] != ["--check-modules"]:
        sys.exit("usage: python -m fedcommon.service_registry --check-modules")
    missing = missing_modules()
    if missing:
        sys.exit(f"services registered but not installed: {', '.join(missing)}")
    print(" ".join(SERVICE_NAMES))
