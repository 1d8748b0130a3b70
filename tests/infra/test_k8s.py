"""infra/k8s: the manifests of one party, checked without a cluster.

kubernetes-validate checks every object against the API's OpenAPI schemas (strict: unknown
fields are errors); the rest checks what a schema cannot: env names that the services really
read, non-root containers, probes, and that only the gateway's link port leaves the namespace.
"""

from __future__ import annotations

import shutil
import subprocess
import tomllib
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from fedcommon.service_registry import SERVICE_NAMES, SERVICES
from pydantic_settings import BaseSettings

from tests.infra.metric_names import REPO

K8S = REPO / "infra" / "k8s"
KUSTOMIZATION = K8S / "kustomization.yaml"
MANIFEST_FILES = sorted(p for p in K8S.glob("*.yaml") if p != KUSTOMIZATION)
# The oldest Kubernetes still commonly run, and the newest the validator ships.
K8S_VERSIONS = ("1.30.0", kubernetes_validate.latest_version())
FEDMQ_SERVICES = set(SERVICE_NAMES)
LINK_PORT = 7443
WORKLOAD_KINDS = {"Deployment", "StatefulSet"}


def load_all(path: Path) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc]


def objects() -> list[dict[str, Any]]:
    return [doc for path in MANIFEST_FILES for doc in load_all(path)]


def of_kind(kind: str) -> list[dict[str, Any]]:
    return [doc for doc in objects() if doc["kind"] == kind]


def workloads() -> list[dict[str, Any]]:
    return [doc for doc in objects() if doc["kind"] in WORKLOAD_KINDS]


def containers(workload: dict[str, Any]) -> list[dict[str, Any]]:
    spec = workload["spec"]["template"]["spec"]
    return [*spec.get("initContainers", []), *spec["containers"]]


def settings_classes() -> dict[str, type[BaseSettings]]:
    """env prefix -> the settings class that reads it."""
    classes: list[type[BaseSettings]] = [spec.settings_class() for spec in SERVICES]
    return {str(cls.model_config["env_prefix"]): cls for cls in classes}


def fedmq_env_names() -> list[tuple[str, str]]:
    """(where, name) of every FEDMQ_* variable the manifests set: container env, and the keys
    of the ConfigMaps and Secrets that containers take whole (envFrom)."""
    found = []
    for workload in workloads():
        for container in containers(workload):
            where = f"{workload['metadata']['name']}/{container['name']}"
            found += [(where, e["name"]) for e in container.get("env", [])]
    for kind in ("ConfigMap", "Secret"):
        for doc in of_kind(kind):
            keys = [*doc.get("data", {}), *doc.get("stringData", {})]
            found += [(f"{kind} {doc['metadata']['name']}", key) for key in keys]
    return [(where, name) for where, name in found if name.startswith("FEDMQ_")]


def unknown_env_names(names: list[tuple[str, str]]) -> list[str]:
    classes = settings_classes()
    problems = []
    for where, name in names:
        prefix = next((p for p in classes if name.startswith(p)), None)
        if prefix is None:
            problems.append(f"{where}: {name} has no service prefix")
            continue
        # FEDMQ_GATEWAY_PEERS__10001__ADDRESS sets one nested field of `peers`.
        field = name[len(prefix) :].split("__")[0].lower()
        if field not in classes[prefix].model_fields:
            problems.append(f"{where}: {name} is not a field of {classes[prefix].__name__}")
    return problems


@pytest.mark.parametrize("version", K8S_VERSIONS)
@pytest.mark.parametrize("path", MANIFEST_FILES, ids=lambda p: p.name)
def test_manifests_validate_against_the_api_schemas(path: Path, version: str) -> None:
    docs = load_all(path)

    assert docs
    for doc in docs:
        kubernetes_validate.validate(doc, version, strict=True)


def test_schema_validation_catches_a_misspelt_field() -> None:
    (deployment,) = load_all(K8S / "worker.yaml")
    probe = deployment["spec"]["template"]["spec"]["containers"][0]["readinessProbe"]
    probe["httpGet"]["paht"] = probe["httpGet"].pop("path")

    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, K8S_VERSIONS[0], strict=True)


def test_kustomization_lists_every_manifest_and_pins_the_image_version() -> None:
    kustomization = yaml.safe_load(KUSTOMIZATION.read_text())
    version = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["version"]

    assert sorted(kustomization["resources"]) == [p.name for p in MANIFEST_FILES]
    assert kustomization["images"] == [{"name": "fedmq/fedmq", "newTag": version}]
    for workload in workloads():
        for container in containers(workload):
            if container["image"].startswith("fedmq/"):
                assert container["image"] == f"fedmq/fedmq:{version}"


def test_kustomize_renders_objects_that_validate() -> None:
    """What `kubectl apply -k` would send (kustomize's labels and image tag applied)."""
    if shutil.which("kubectl") is None:
        pytest.skip("kubectl is not installed: the rendering through kustomize is not checked")
    result = subprocess.run(
        ["kubectl", "kustomize", str(K8S)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    rendered = [doc for doc in yaml.safe_load_all(result.stdout) if doc]

    assert len(rendered) == len(objects())
    for doc in rendered:
        kubernetes_validate.validate(doc, K8S_VERSIONS[-1], strict=True)
        assert doc["metadata"].get("namespace", "fedmq") == "fedmq"


def test_every_fedmq_env_name_is_a_settings_field() -> None:
    names = fedmq_env_names()

    assert len(names) > 20, "the manifests set the services' settings"
    assert unknown_env_names(names) == []


def test_a_misspelt_env_name_is_caught() -> None:
    problems = unknown_env_names(
        [
            ("worker/worker", "FEDMQ_WORKER_TASK_THREAD"),
            ("worker/worker", "FEDMQ_WORKR_BUS_URL"),
            ("gateway/gateway", "FEDMQ_GATEWAY_PEERS__10001__ADDRESS"),
            ("gateway/gateway", "FEDMQ_SCHEDULER_IDENTITY_DIR"),
        ]
    )

    assert problems == [
        "worker/worker: FEDMQ_WORKER_TASK_THREAD is not a field of WorkerSettings",
        "worker/worker: FEDMQ_WORKR_BUS_URL has no service prefix",
        "gateway/gateway: FEDMQ_SCHEDULER_IDENTITY_DIR is not a field of SchedulerSettings",
    ]


def test_each_service_gets_its_secrets_and_runs_in_production() -> None:
    """Every connection URL a service needs comes from the Secret, and production mode is on
    (it is what makes the placeholder passwords of secret.example.yaml refuse to start)."""
    config = next(c for c in of_kind("ConfigMap") if c["metadata"]["name"] == "fedmq-config")
    (secret,) = of_kind("Secret")
    by_name = {w["metadata"]["name"]: w for w in workloads()}
    for service in FEDMQ_SERVICES:
        prefix = f"FEDMQ_{service.upper()}_"
        (container,) = containers(by_name[service])
        from_secret = {
            e["name"]
            for e in container.get("env", [])
            if e.get("valueFrom", {}).get("secretKeyRef", {}).get("name") == "fedmq-secrets"
        }

        assert config["data"][f"{prefix}ENVIRONMENT"] == "production"
        assert {f"{prefix}BUS_URL", f"{prefix}DATABASE_URL"} <= from_secret, service
        assert from_secret <= set(secret["stringData"]), service
        assert {"configMapRef": {"name": "fedmq-config"}} in container["envFrom"]


def manifest_env() -> dict[str, str]:
    """The FEDMQ_* environment the ConfigMap and the example Secret give the services."""
    (secret,) = of_kind("Secret")
    config = next(c for c in of_kind("ConfigMap") if c["metadata"]["name"] == "fedmq-config")
    values = {**config["data"], **secret["stringData"]}
    return {k: str(v) for k, v in values.items() if k.startswith("FEDMQ_")}


def test_placeholder_secrets_are_refused_in_production(monkeypatch: pytest.MonkeyPatch) -> None:
    """The promise secret.example.yaml makes: its values, as given, stop every service."""
    for name, value in manifest_env().items():
        monkeypatch.setenv(name, value)

    for cls in settings_classes().values():
        with pytest.raises(ValueError, match="placeholder"):
            cls()


def test_the_manifests_settings_load_once_the_placeholders_are_replaced(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """With real secrets the same environment is valid settings (peers JSON, token list, ...),
    so the refusal above is the placeholders' doing and nothing else."""
    audit_key = Ed25519PrivateKey.generate()
    hex_keys = {  # the audit's key pair is hex, not a password
        "FEDMQ_AUDIT_SIGNING_KEY": audit_key.private_bytes_raw().hex(),
        "FEDMQ_SCHEDULER_AUDIT_PUBLIC_KEY": audit_key.public_key().public_bytes_raw().hex(),
    }
    for name, value in manifest_env().items():
        if name in hex_keys:
            monkeypatch.setenv(name, hex_keys[name])
            continue
        real = value.replace("changethis", "a-real-api-token-0123456789")
        # (32+ characters: the workers' checkpoint key has a minimum length)
        monkeypatch.setenv(name, real.replace("changeme", "s3cret-Pa55word-0123456789abcdef"))

    loaded = {prefix: cls() for prefix, cls in settings_classes().items()}

    gateway = loaded["FEDMQ_GATEWAY_"]
    assert gateway.environment == "production"  # type: ignore[attr-defined]
    assert list(gateway.peers) == ["10001"]  # type: ignore[attr-defined]
    assert all(s.http_host == "0.0.0.0" for s in loaded.values())  # type: ignore[attr-defined]


def test_containers_run_as_non_root_without_privileges() -> None:
    for workload in workloads():
        pod = workload["spec"]["template"]["spec"]
        for container in containers(workload):
            context = {**pod.get("securityContext", {}), **container.get("securityContext", {})}
            where = f"{workload['metadata']['name']}/{container['name']}"

            assert context.get("runAsNonRoot") is True, where
            assert context.get("runAsUser", 0) != 0, where
            assert context.get("allowPrivilegeEscalation") is False, where
            assert context.get("capabilities", {}).get("drop") == ["ALL"], where


def test_fedmq_services_have_read_only_root_filesystems_and_healthz_probes() -> None:
    by_name = {w["metadata"]["name"]: w for w in workloads()}
    for service in FEDMQ_SERVICES:
        (container,) = containers(by_name[service])
        ports = {p["name"]: p["containerPort"] for p in container["ports"]}

        assert container["securityContext"]["readOnlyRootFilesystem"] is True
        assert container["resources"]["requests"] and container["resources"]["limits"]
        for probe in ("livenessProbe", "readinessProbe"):
            http = container[probe]["httpGet"]
            assert http["path"] == "/healthz", (service, probe)
            assert http["port"] == "http", (service, probe)
        assert ports["http"] == settings_http_port(service)


def settings_http_port(service: str) -> int:
    classes = settings_classes()
    default = classes[f"FEDMQ_{service.upper()}_"].model_fields["http_port"].default
    assert isinstance(default, int)
    return default


def test_every_container_has_probes() -> None:
    for workload in workloads():
        for container in workload["spec"]["template"]["spec"]["containers"]:
            where = f"{workload['metadata']['name']}/{container['name']}"

            assert "livenessProbe" in container, where
            assert "readinessProbe" in container, where


def test_only_the_gateway_link_port_is_exposed_outside() -> None:
    services = of_kind("Service")
    exposed = [s for s in services if s["spec"].get("type", "ClusterIP") != "ClusterIP"]

    assert len(exposed) == 1, [s["metadata"]["name"] for s in exposed]
    (link,) = exposed
    assert link["spec"]["type"] in {"LoadBalancer", "NodePort"}
    assert link["spec"]["selector"] == {"app.kubernetes.io/name": "gateway"}
    assert [p["port"] for p in link["spec"]["ports"]] == [LINK_PORT]
    for service in services:
        assert "externalIPs" not in service["spec"], service["metadata"]["name"]


def test_network_policy_admits_outsiders_only_to_the_link_port() -> None:
    policies = of_kind("NetworkPolicy")
    assert policies
    # Some policy selects every pod, so anything not allowed below is denied.
    assert any(p["spec"]["podSelector"] == {} for p in policies)
    outside_rules = []
    for policy in policies:
        for rule in policy["spec"].get("ingress", []):
            peers = rule.get("from")
            same_namespace_only = peers and all(set(peer) == {"podSelector"} for peer in peers)
            if not same_namespace_only:
                outside_rules.append((policy, rule))

    assert outside_rules, "nothing lets the other sites in"
    for policy, rule in outside_rules:
        assert policy["spec"]["podSelector"] == {
            "matchLabels": {"app.kubernetes.io/name": "gateway"}
        }
        assert rule["ports"] == [{"protocol": "TCP", "port": LINK_PORT}]


def test_workers_are_found_by_dns_like_in_compose() -> None:
    """Prometheus' dns_sd_configs on `worker` needs a headless Service (one A record per pod)."""
    (worker,) = [s for s in of_kind("Service") if s["metadata"]["name"] == "worker"]

    assert worker["spec"]["clusterIP"] == "None"
    assert worker["spec"]["ports"][0]["port"] == settings_http_port("worker")
