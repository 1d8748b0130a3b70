"""docker-compose.yml against the compose tool, the local launcher and the services' settings."""

from __future__ import annotations

import re
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
import yaml
from fedcommon.service_registry import SERVICES

from fedmq import local
from fedmq.site_cli import init_site
from tests.deploy.helpers import (
    COMPOSE_FILE,
    ENV_EXAMPLE,
    FEDMQ_SERVICES,
    REPO,
    MissingVariable,
    compose_config,
    load_compose,
    raw_compose,
    read_env_file,
)

SETTINGS_PREFIX = re.compile(rf"^FEDMQ_({'|'.join(n.upper() for n in FEDMQ_SERVICES)})_(.+)$")
ONE_SHOTS = {"identity", "broker-users"}
"""Run to completion before the services start (depends_on: service_completed_successfully)."""
NO_PROBE = {"otel-collector", "jaeger"}
"""Distroless images with nothing to probe with; the file says so next to `disable: true`."""


def settings_classes() -> dict[str, Any]:
    return {spec.name.upper(): spec.settings_class() for spec in SERVICES}


def unknown_settings(names: list[str]) -> list[str]:
    """The FEDMQ_<SVC>_<FIELD> names whose FIELD is not a field of that service's settings."""
    classes = settings_classes()
    bad = []
    for name in names:
        match = SETTINGS_PREFIX.match(name)
        if match and match[2].lower() not in classes[match[1]].model_fields:
            bad.append(name)
    return bad


@pytest.fixture
def site_env(tmp_path: Path) -> Path:
    return init_site(tmp_path / "site", "10000", "acme", "bank.example:7443").env_file


# --- the compose tool ------------------------------------------------------------------------


def test_compose_config_accepts_a_generated_site_env(site_env: Path) -> None:
    # Execute: the real tool, with and without the observability profile
    plain = compose_config(site_env)
    observed = compose_config(site_env, "--profile", "observability")

    # Assert: valid, and the party id of the .env reached the services
    assert plain.returncode == 0, plain.stderr
    assert observed.returncode == 0, observed.stderr
    config = yaml.safe_load(observed.stdout)
    assert config["services"]["gateway"]["environment"]["FEDMQ_GATEWAY_PARTY_ID"] == "10000"
    assert {"prometheus", "grafana", "otel-collector", "jaeger"} <= set(config["services"])


def test_a_missing_required_variable_stops_compose_with_its_message(
    site_env: Path, tmp_path: Path
) -> None:
    # Prepare: every ${VAR:?message} in the file, and a .env without each in turn
    text = re.sub(r"(?m)^\s*#.*$", "", COMPOSE_FILE.read_text())
    required = dict(re.findall(r"\$\{([A-Z0-9_]+):\?([^}]*)\}", text))
    assert {"FEDMQ_PARTY_ID", "POSTGRES_PASSWORD", "RABBITMQ_PASSWORD", "FEDMQ_API_TOKEN"} <= set(
        required
    )
    lines = site_env.read_text().splitlines()
    env_files = {}
    for name in required:
        env_files[name] = tmp_path / f"{name}.env"
        env_files[name].write_text("\n".join(ln for ln in lines if not ln.startswith(name + "=")))

    # Execute: one compose run per variable, side by side (each mostly waits: 16 in a row took
    # over a minute on a loaded machine)
    with ThreadPoolExecutor(8) as pool:
        done = dict(zip(required, pool.map(compose_config, env_files.values()), strict=True))

    # Assert: each refused, naming what is missing
    for name, message in required.items():
        assert done[name].returncode != 0, name
        assert message.strip() in done[name].stderr, (name, done[name].stderr)


# --- against the launcher and the settings ----------------------------------------------------


def test_every_launcher_service_runs_its_module_in_compose(example_env: dict[str, str]) -> None:
    services = load_compose(example_env)["services"]
    assert set(local.SERVICES) == set(FEDMQ_SERVICES)
    for name in local.SERVICES:
        assert name in services, f"no compose service for the launcher's {name}"
        assert services[name]["command"] == ["python", "-m", local._MODULES[name]]


def test_every_fedmq_setting_in_compose_and_env_example_is_a_real_field(
    example_env: dict[str, str],
) -> None:
    # Prepare: every variable the services get, and every key of .env.example
    services = load_compose(example_env)["services"]
    names = [key for s in services.values() for key in (s.get("environment") or {})]
    names += list(read_env_file(ENV_EXAMPLE))
    assert sum(1 for n in names if SETTINGS_PREFIX.match(n)) > 20

    # Assert: none is a typo or a setting that does not exist
    assert unknown_settings(names) == []
    # ...and the check itself catches one
    assert unknown_settings(["FEDMQ_GATEWAY_HTTP_PROT", "FEDMQ_WORKER_REPLICAS"]) == [
        "FEDMQ_GATEWAY_HTTP_PROT",
        "FEDMQ_WORKER_REPLICAS",
    ]


def test_each_service_gets_only_its_own_settings_in_production(
    example_env: dict[str, str],
) -> None:
    services = load_compose(example_env)["services"]
    for name in FEDMQ_SERVICES:
        env = services[name]["environment"]
        prefixes = {m[1] for key in env if (m := SETTINGS_PREFIX.match(key))}
        assert prefixes == {name.upper()}, (name, prefixes)
        assert env[f"FEDMQ_{name.upper()}_ENVIRONMENT"] == "production"
        assert env[f"FEDMQ_{name.upper()}_PARTY_ID"] == example_env["FEDMQ_PARTY_ID"]
        # Traces go to the collector only when the operator sets the endpoint.
        assert env[f"FEDMQ_{name.upper()}_OTLP_ENDPOINT"] == example_env["FEDMQ_OTLP_ENDPOINT"]


def test_the_http_ports_are_the_ones_prometheus_and_the_healthchecks_use(
    example_env: dict[str, str],
) -> None:
    services = load_compose(example_env)["services"]
    for name, port in (("gateway", 8081), ("scheduler", 8082), ("worker", 8083)):
        env = services[name]["environment"]
        assert env[f"FEDMQ_{name.upper()}_HTTP_PORT"] == str(port)
        # Inside the container; published (or not) by `ports` only.
        assert env[f"FEDMQ_{name.upper()}_HTTP_HOST"] == "0.0.0.0"
        assert f"http://127.0.0.1:{port}/healthz" in " ".join(services[name]["healthcheck"]["test"])
    assert services["gateway"]["environment"]["FEDMQ_GATEWAY_LISTEN_PORT"] == "7443"


# --- exposure, health, restarts, images -------------------------------------------------------


def published(service: dict[str, Any]) -> list[tuple[str, str]]:
    """(host ip, container port) of each published port (short syntax after interpolation)."""
    out = []
    for entry in service.get("ports", []):
        parts = str(entry).split(":")
        assert len(parts) in (2, 3), f"use HOST:CONTAINER or IP:HOST:CONTAINER, got {entry}"
        out.append((parts[0] if len(parts) == 3 else "0.0.0.0", parts[-1].split("/")[0]))
    return out


def test_only_the_link_port_is_published_on_all_interfaces(
    example_env: dict[str, str],
) -> None:
    services = load_compose(example_env)["services"]
    exposed = {(name, ip, port) for name, s in services.items() for ip, port in published(s)}
    everywhere = {(name, port) for name, ip, port in exposed if ip != "127.0.0.1"}
    assert everywhere == {("gateway", "7443")}
    loopback = {(name, port) for name, ip, port in exposed if ip == "127.0.0.1"}
    assert loopback == {("gateway", "8081"), ("grafana", "3000"), ("jaeger", "16686")}
    assert not any("expose" in s for s in services.values())


def test_the_servers_and_internal_services_sit_on_the_internal_network_only(
    example_env: dict[str, str],
) -> None:
    config = load_compose(example_env)
    assert config["networks"]["backend"]["internal"] is True
    for name, service in config["services"].items():
        if name == "identity":  # copies files only; broker-users talks to the broker
            assert service["network_mode"] == "none"
        elif published(service) or name == "gateway":
            assert set(service["networks"]) == {"backend", "edge"}, name
        else:
            assert service["networks"] == ["backend"], name


def test_every_service_has_a_healthcheck_and_a_restart_policy(
    example_env: dict[str, str],
) -> None:
    services = load_compose(example_env)["services"]
    for name, service in services.items():
        if name in ONE_SHOTS:
            assert service["restart"] == "no", name
            continue
        assert service["restart"] in ("unless-stopped", "always"), name
        check = service.get("healthcheck")
        assert check is not None, f"{name} has no healthcheck"
        if name in NO_PROBE:
            assert check == {"disable": True}, name
        else:
            assert check["test"][0] in ("CMD", "CMD-SHELL") and len(check["test"]) > 1, name
    # The probes the brief names for the servers
    assert services["rabbitmq"]["healthcheck"]["test"][1] == "rabbitmq-diagnostics"
    assert "redis-cli" in " ".join(services["redis"]["healthcheck"]["test"])
    assert services["postgres"]["healthcheck"]["test"][1] == "pg_isready"


def test_dependencies_wait_for_health_or_completion(example_env: dict[str, str]) -> None:
    services = load_compose(example_env)["services"]
    for name, service in services.items():
        for dep, spec in (service.get("depends_on") or {}).items():
            expected = (
                "service_completed_successfully"
                if dep in ONE_SHOTS
                else "service_started"
                if dep in NO_PROBE
                else "service_healthy"
            )
            assert spec["condition"] == expected, (name, dep)
    assert set(services["gateway"]["depends_on"]) == {
        "identity",
        "broker-users",
        "rabbitmq",
        "postgres",
    }
    for name in ("scheduler", "worker"):
        expected = {"broker-users", "rabbitmq", "postgres", "redis"}
        assert set(services[name]["depends_on"]) == expected


def test_images_are_pinned(example_env: dict[str, str]) -> None:
    services = load_compose(example_env)["services"]
    for name, service in services.items():
        image = service["image"]
        repo, _, tag = image.rpartition(":")
        assert repo and "/" not in tag, f"{name}: {image} has no tag"
        assert tag != "latest" and re.search(r"\d+\.\d+", tag), f"{name}: {image} is not pinned"


def test_volumes_hold_the_partys_state_and_identity_is_read_only(
    example_env: dict[str, str],
) -> None:
    config = load_compose(example_env)
    services = config["services"]
    assert {"rabbitmq", "postgres", "tables", "identity"} <= set(config["volumes"])
    assert "identity:/var/lib/fedmq/identity:ro" in services["gateway"]["volumes"]
    assert "rabbitmq:/var/lib/rabbitmq" in services["rabbitmq"]["volumes"]
    assert "postgres:/var/lib/postgresql/data" in services["postgres"]["volumes"]
    # The tables are the workers' alone: every replica stores uploads and reads them there
    assert "tables:/var/lib/fedmq/.fedmq" in services["worker"]["volumes"]
    assert "tables:/var/lib/fedmq/.fedmq" not in services["scheduler"].get("volumes", [])


def test_bind_mounted_repository_files_exist() -> None:
    # The literal ./ paths (the site's own folders come from .env and are the site's business)
    services = raw_compose()["services"]
    for name, service in services.items():
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith("./"):
                assert (REPO / source).exists(), f"{name} mounts {source}, which is missing"


def test_observability_profile(example_env: dict[str, str]) -> None:
    services = load_compose(example_env)["services"]
    profiled = {n for n, s in services.items() if "observability" in s.get("profiles", [])}
    assert profiled == {"prometheus", "grafana", "otel-collector", "jaeger"}
    prom = services["prometheus"]
    assert "--enable-feature=expand-external-labels" in prom["command"]
    assert prom["environment"]["FEDMQ_PARTY_ID"] == example_env["FEDMQ_PARTY_ID"]
    assert services["jaeger"]["environment"]["COLLECTOR_OTLP_ENABLED"] == "true"
    assert (
        services["grafana"]["environment"]["GF_SECURITY_ADMIN_PASSWORD"]
        == (example_env["GRAFANA_ADMIN_PASSWORD"])
    )


def test_worker_replicas_come_from_the_env(example_env: dict[str, str]) -> None:
    env = {**example_env, "FEDMQ_WORKERS": "3"}
    assert load_compose(env)["services"]["worker"]["deploy"]["replicas"] == "3"
    assert "container_name" not in load_compose(env)["services"]["worker"]


def test_interpolation_helper_refuses_a_missing_required_value(
    example_env: dict[str, str],
) -> None:
    env = {k: v for k, v in example_env.items() if k != "FEDMQ_API_TOKEN"}
    with pytest.raises(MissingVariable, match="FEDMQ_API_TOKEN"):
        load_compose(env)
