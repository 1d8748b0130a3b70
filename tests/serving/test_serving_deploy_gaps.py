"""What two-party serving needs of each deployment shape beyond a running serving service
(tests/deploy and tests/infra check that it runs, in production mode, with its secrets): each
party's gateway lets the peers call svc.serving (without it every host call is refused), and
the Kubernetes Deployment keeps a replica answering through a rolling update, as
docs/serving.md says."""

from __future__ import annotations

from typing import Any

import yaml
from fedgateway.settings import GatewaySettings
from fedschemas import topics
from pydantic import TypeAdapter

from tests.deploy.helpers import ENV_EXAMPLE, REPO, load_compose, read_env_file


def exposed(value: str) -> Any:
    """The gateway's rpc_services as its settings read the variable (refused if malformed)."""
    field = GatewaySettings.model_fields["rpc_services"]
    return TypeAdapter(field.annotation).validate_json(value)


def k8s(name: str) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all((REPO / "infra/k8s" / name).read_text()) if d]


def test_compose_and_kubernetes_gateways_expose_the_serving_service_to_the_peers() -> None:
    # Prepare
    compose = load_compose(read_env_file(ENV_EXAMPLE))
    (config,) = [d for d in k8s("configmap.yaml") if d["metadata"]["name"] == "fedmq-config"]

    # Execute
    shapes = {
        "compose": compose["services"]["gateway"]["environment"]["FEDMQ_GATEWAY_RPC_SERVICES"],
        "k8s": config["data"]["FEDMQ_GATEWAY_RPC_SERVICES"],
    }

    # Assert: every peer may call svc.serving, the topic the serving service answers on
    for shape, value in shapes.items():
        assert exposed(value) == {topics.SERVING: ["*"]}, shape


def test_the_kubernetes_serving_deployment_keeps_a_replica_through_a_rolling_update() -> None:
    (deployment,) = [d for d in k8s("serving.yaml") if d["kind"] == "Deployment"]
    spec = deployment["spec"]
    assert spec["replicas"] >= 2
    assert spec["strategy"]["rollingUpdate"]["maxUnavailable"] == 0
