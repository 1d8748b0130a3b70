"""The service registry (fedcommon.service_registry) against everything that lists services:
docker-compose.yml, infra/k8s, docker/Dockerfile, the lock tooling, the launcher and the
services' own settings. A service added, renamed or moved in one place only fails here."""

from __future__ import annotations

import copy
import re
import tomllib
from importlib import metadata
from pathlib import Path
from typing import Any

import yaml
from fedcommon.service_registry import SERVICE_NAMES, SERVICES, ServiceSpec, service

from fedmq import local
from tests.deploy.helpers import REPO, raw_compose
from tests.deploy.test_dockerfile import DOCKERFILE, stages

K8S = REPO / "infra" / "k8s"
_FEDMQ_MODULE = re.compile(r"^fed[a-z]+$")


def _runs_a_fedmq_module(command: list[str] | None) -> str | None:
    if command and len(command) == 3 and command[:2] == ["python", "-m"]:
        return command[2] if _FEDMQ_MODULE.match(command[2]) else None
    return None


def compose_disagreements(compose: dict[str, Any]) -> list[str]:
    problems = []
    services = compose["services"]
    for spec in SERVICES:
        svc = services.get(spec.name)
        if svc is None:
            problems.append(f"compose: no service {spec.name}")
            continue
        if svc.get("command") != list(spec.command):
            problems.append(f"compose {spec.name}: command {svc.get('command')}")
        probe = " ".join(svc.get("healthcheck", {}).get("test", []))
        if f"http://127.0.0.1:{spec.http_port}/healthz" not in probe:
            problems.append(f"compose {spec.name}: healthcheck does not probe {spec.http_port}")
        prefixes = {k[: len(spec.env_prefix)] for k in svc.get("environment") or {}}
        if spec.env_prefix not in prefixes:
            problems.append(f"compose {spec.name}: no {spec.env_prefix}* settings")
    registered = {s.module for s in SERVICES}
    for name, svc in services.items():
        module = _runs_a_fedmq_module(svc.get("command"))
        if module is not None and module not in registered:
            problems.append(f"compose {name}: runs {module}, which is not a registered service")
    return problems


def k8s_objects() -> list[dict[str, Any]]:
    docs = []
    for path in sorted(K8S.glob("*.yaml")):
        docs += [d for d in yaml.safe_load_all(path.read_text()) if d and "kind" in d]
    return docs


def k8s_disagreements(objects: list[dict[str, Any]]) -> list[str]:
    problems = []
    workloads = {
        o["metadata"]["name"]: o for o in objects if o["kind"] in ("Deployment", "StatefulSet")
    }
    for spec in SERVICES:
        workload = workloads.get(spec.name)
        if workload is None:
            problems.append(f"k8s: no workload {spec.name}")
            continue
        containers = {c["name"]: c for c in workload["spec"]["template"]["spec"]["containers"]}
        container = containers.get(spec.name)
        if container is None:
            problems.append(f"k8s {spec.name}: no container {spec.name}")
            continue
        if container.get("command") != list(spec.command):
            problems.append(f"k8s {spec.name}: command {container.get('command')}")
        ports = sorted(p["containerPort"] for p in container.get("ports", []))
        if ports != sorted(spec.ports):
            problems.append(f"k8s {spec.name}: container ports {ports}, registry {spec.ports}")
    registered = {s.module for s in SERVICES}
    for name, workload in workloads.items():
        for c in workload["spec"]["template"]["spec"]["containers"]:
            module = _runs_a_fedmq_module(c.get("command"))
            if module is not None and module not in registered:
                problems.append(f"k8s {name}/{c['name']}: runs unregistered {module}")
    return problems


def dockerfile_disagreements(text: str) -> list[str]:
    problems = []
    joined = re.sub(r"\\\n", " ", text)
    packages = re.search(r'ARG FEDMQ_PACKAGES="([^"]*)"', joined)
    listed = packages[1].split() if packages else []
    exposed: set[int] = set()
    for line in joined.splitlines():
        if line.strip().startswith("EXPOSE "):
            exposed = {int(p) for p in line.split()[1:]}
            wanted = {p for s in SERVICES for p in s.ports}
            if exposed != wanted:
                problems.append(f"Dockerfile: EXPOSE {sorted(exposed)}, registry {sorted(wanted)}")
    for spec in SERVICES:
        if spec.source_dir not in listed:
            problems.append(f"Dockerfile: FEDMQ_PACKAGES lacks {spec.source_dir}")
    for stage in ("runtime", "gpu"):
        if "fedcommon.service_registry --check-modules" not in " ".join(stages()[stage]):
            problems.append(f"Dockerfile {stage}: does not check the registered modules")
    return problems


# --- the checks ------------------------------------------------------------------------------


def test_compose_runs_exactly_the_registered_services() -> None:
    assert compose_disagreements(raw_compose()) == []


def test_kubernetes_runs_exactly_the_registered_services() -> None:
    assert k8s_disagreements(k8s_objects()) == []


def test_the_dockerfile_builds_exposes_and_checks_every_registered_service() -> None:
    assert dockerfile_disagreements(DOCKERFILE.read_text()) == []


def test_the_launcher_starts_the_registered_services_with_their_modules() -> None:
    assert local.SERVICES == SERVICE_NAMES
    assert {s.name: s.module for s in SERVICES} == local._MODULES


def test_each_registered_service_is_installed_and_its_settings_match() -> None:
    for spec in SERVICES:
        # Its package folder builds the distribution it names, which provides the module
        project = tomllib.loads((REPO / spec.source_dir / "pyproject.toml").read_text())
        assert project["project"]["name"] == spec.distribution
        assert (REPO / spec.source_dir / "src" / spec.module / "__main__.py").is_file()
        assert metadata.version(spec.distribution)
        # Its settings read its prefix and serve HTTP on the registered port by default
        settings = spec.settings_class()
        assert settings.model_config["env_prefix"] == spec.env_prefix
        assert settings.service_name == spec.name
        assert settings.model_fields["http_port"].default == spec.http_port
    assert service("gateway").settings_class().model_fields["listen_port"].default in (
        service("gateway").other_ports
    )


# --- the checks catch a disagreement ------------------------------------------------------------


def test_a_compose_service_left_behind_by_a_rename_is_caught() -> None:
    # Prepare: compose still runs the old module name and probes the wrong port
    compose = copy.deepcopy(raw_compose())
    compose["services"]["worker"]["command"] = ["python", "-m", "fedworkers"]
    compose["services"]["scheduler"]["healthcheck"]["test"][-1] = "http://127.0.0.1:9/healthz"

    # Execute
    problems = compose_disagreements(compose)

    # Assert
    assert "compose worker: command ['python', '-m', 'fedworkers']" in problems
    assert "compose worker: runs fedworkers, which is not a registered service" in problems
    assert "compose scheduler: healthcheck does not probe 8082" in problems


def test_a_kubernetes_workload_missing_or_on_another_port_is_caught() -> None:
    # Prepare: the scheduler's Deployment left out, the worker's port changed
    objects = [
        o
        for o in k8s_objects()
        if not (o["kind"] == "Deployment" and o["metadata"].get("name") == "scheduler")
    ]
    (worker,) = [
        o for o in objects if o["kind"] == "Deployment" and o["metadata"]["name"] == "worker"
    ]
    worker["spec"]["template"]["spec"]["containers"][0]["ports"][0]["containerPort"] = 9000

    # Execute
    problems = k8s_disagreements(objects)

    # Assert
    assert "k8s: no workload scheduler" in problems
    assert "k8s worker: container ports [9000], registry (8083,)" in problems


def test_a_dockerfile_that_forgets_a_service_is_caught() -> None:
    # Prepare: the worker's package and port dropped
    text = DOCKERFILE.read_text().replace("./services/worker ", "").replace(" 8083", "")

    # Execute
    problems = dockerfile_disagreements(text)

    # Assert
    assert "Dockerfile: FEDMQ_PACKAGES lacks ./services/worker" in problems
    assert any(
        p.startswith("Dockerfile: EXPOSE [7443, 8081, 8082, 8084, 8085]") for p in problems
    )


def test_an_unknown_service_name_says_which_exist() -> None:
    try:
        service("predictor")
    except KeyError as exc:
        assert "gateway, worker, scheduler, audit, serving" in str(exc)
    else:
        raise AssertionError("service('predictor') should not exist")
    assert isinstance(service("worker"), ServiceSpec)
    assert Path(service("worker").source_dir).name == "worker"
