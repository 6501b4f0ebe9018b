"""The Kubernetes manifests (deploy/k8s): every overlay renders and is valid, KEDA scales each
service on a consumer that exists, every setting a service reads is provided (and only those),
and every pod runs restricted, probed, limited and stops gracefully."""

from __future__ import annotations

import copy
import os
import re
import shutil
import subprocess
import sys
import tomllib
from urllib.parse import urlsplit

import pytest
import yaml

from aether_contracts import topology
from aether_core.templates import load_registry
from tests.support.k8s import (
    KUBERNETES_VERSIONS,
    OVERLAYS,
    ROOT,
    env_of,
    kubectl,
    nats_conf,
    of_kind,
    problems,
    render,
)
from tests.support.settings import env_names, service_settings

SERVICES = ("gateway", "planner", "executor", "synthesizer")
AGENT_TYPES = load_registry(None).agent_types

UNSET_ON_PURPOSE = {
    "AETHER_AGENTS_DIR": "the built-in templates; custom ones come with a volume of your own",
    "AETHER_PLANNER_MODEL": "AETHER_LLM_MODEL",
    "AETHER_EXPERT_MODEL": "AETHER_LLM_MODEL",
    "AETHER_SYNTHESIZER_MODEL": "AETHER_LLM_MODEL",
    "AETHER_AGENT_ID": "the instance id, which is the pod name",
    "AETHER_TASK_TOKEN_BUDGET": "no budget",
    "AETHER_API_KEYS": "the keys are a Secret, mounted where AETHER_API_KEYS_FILE points",
    "OTEL_SDK_DISABLED": "tracing on: OTEL_EXPORTER_OTLP_ENDPOINT is set",
    "OTEL_TRACES_EXPORTER": "otlp, implied by OTEL_EXPORTER_OTLP_ENDPOINT",
    "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "OTEL_EXPORTER_OTLP_ENDPOINT covers traces",
    "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL": "OTEL_EXPORTER_OTLP_PROTOCOL covers traces",
    "OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT": "prompts and replies stay out of traces unless asked for",
}
GATEWAY_UNSET = {
    "AETHER_PROBE_PORT": "the gateway serves /livez and /readyz on its HTTP port",
    "AETHER_PROBE_HOST": "the gateway serves /livez and /readyz on its HTTP port",
}


def aether_pods(docs):
    """(deployment name, service name, pod spec) of every Aether service's Deployment."""
    for name, deployment in of_kind(docs, "Deployment").items():
        service = deployment["spec"]["template"]["metadata"]["labels"]["app.kubernetes.io/name"]
        if service in SERVICES:
            yield name, service, deployment["spec"]["template"]["spec"]


def workloads(docs):
    for doc in docs:
        if doc["kind"] in ("Deployment", "StatefulSet"):
            yield doc["metadata"]["name"], doc["spec"]["template"]


def configured(docs, config_map_prefix: str, key: str) -> str:
    for name, config_map in of_kind(docs, "ConfigMap").items():
        if name.startswith(config_map_prefix + "-") and key in config_map["data"]:
            return config_map["data"][key]
    raise KeyError(f"{key} in {config_map_prefix}")


# -- valid ------------------------------------------------------------------------------------


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_overlay_renders_and_validates_strictly(overlay, version):
    docs = render(overlay)
    assert len(docs) > 40
    found = {f"{d['kind']}/{d['metadata']['name']}": problems(d, version) for d in docs}
    assert not {k: v for k, v in found.items() if v}


def test_the_validation_rejects_what_a_cluster_would_not_take():
    docs = render("prod")
    deployment = copy.deepcopy(of_kind(docs, "Deployment")["gateway"])
    deployment["spec"]["template"]["spec"]["containers"][0]["readinessProbe"]["httpGet"]["paht"] = "/"
    assert problems(deployment, KUBERNETES_VERSIONS[-1])

    scaled = copy.deepcopy(of_kind(docs, "ScaledObject")["planner"])
    assert not problems(scaled, KUBERNETES_VERSIONS[-1])
    scaled["spec"]["triggers"][0]["metadata"]["lagTreshold"] = "5"
    assert any("lagTreshold" in p for p in problems(scaled, KUBERNETES_VERSIONS[-1]))
    scaled = copy.deepcopy(of_kind(docs, "ScaledObject")["planner"])
    scaled["spec"]["minReplicas"] = 1
    assert problems(scaled, KUBERNETES_VERSIONS[-1])
    unknown = {"apiVersion": "example.com/v1", "kind": "Widget", "metadata": {"name": "w"}}
    assert problems(unknown, KUBERNETES_VERSIONS[-1])


# -- scaling ----------------------------------------------------------------------------------


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_keda_scales_each_deployment_on_a_consumer_that_exists(overlay):
    docs = render(overlay)
    namespace = of_kind(docs, "Namespace")
    assert len(namespace) == 1
    deployments = of_kind(docs, "Deployment")
    consumers = {spec.durable for spec in topology.SERVICE_CONSUMERS}
    consumers |= {topology.worker_consumer(t).durable for t in AGENT_TYPES}
    scaled = of_kind(docs, "ScaledObject")
    for name, scaled_object in scaled.items():
        target = scaled_object["spec"]["scaleTargetRef"]["name"]
        assert target in deployments, name
        assert not deployments[target]["spec"].get("replicas"), f"{target}: KEDA owns the count"
        for trigger in scaled_object["spec"]["triggers"]:
            assert trigger["type"] == "nats-jetstream"
            meta = trigger["metadata"]
            assert meta["stream"] == topology.STREAM
            assert meta["consumer"] in consumers, meta["consumer"]
            # KEDA asks the consumer's leader node directly, at <pod>.<this host>: the host
            # must be the headless Service of the NATS StatefulSet, in this namespace.
            host, port = meta["natsServerMonitoringEndpoint"].split(":")
            statefulset = of_kind(docs, "StatefulSet")["nats"]
            assert host == f"{statefulset['spec']['serviceName']}.{next(iter(namespace))}.svc.cluster.local"
            monitor = next(
                p["containerPort"]
                for p in statefulset["spec"]["template"]["spec"]["containers"][0]["ports"]
                if p["name"] == "monitor"
            )
            assert int(port) == monitor
    # Every consumer is scaled on by exactly the Deployment that consumes it.
    scaled_on = [t["metadata"]["consumer"] for s in scaled.values() for t in s["spec"]["triggers"]]
    assert sorted(scaled_on) == sorted(consumers)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_each_agent_type_has_its_own_worker_deployment_scaled_to_zero_when_idle(overlay):
    docs = render(overlay)
    deployments = of_kind(docs, "Deployment")
    scaled = of_kind(docs, "ScaledObject")
    for agent_type in AGENT_TYPES:
        name = f"executor-{agent_type}"
        env = env_of(deployments[name]["spec"]["template"]["spec"]["containers"][0], docs)
        assert env["AETHER_EXECUTOR_ROLE"] == "worker"
        assert env["AETHER_AGENT_TYPES"] == agent_type
        spec = scaled[name]["spec"]
        assert spec["minReplicaCount"] == 0
        assert spec["triggers"][0]["metadata"]["consumer"] == topology.worker_consumer(agent_type).durable
        # One replica's worth of backlog is what one worker runs at once.
        assert spec["triggers"][0]["metadata"]["lagThreshold"] == env["AETHER_WORKER_CONCURRENCY"]
    scheduler = env_of(deployments["executor-scheduler"]["spec"]["template"]["spec"]["containers"][0], docs)
    assert scheduler["AETHER_EXECUTOR_ROLE"] == "scheduler"
    for name in ("planner", "synthesizer", "executor-scheduler"):
        assert scaled[name]["spec"]["minReplicaCount"] >= 1, f"{name} is on every task's path"


def test_the_worker_deployments_are_rendered_from_one_template():
    """Issue 17: the six copies of a worker Deployment are one template; workers.yaml is what it
    renders for the built-in types, nothing edited by hand."""
    from aether_devstack.k8s_workers import OUTPUT, PLACEHOLDER
    from aether_devstack.k8s_workers import render as render_workers

    committed = OUTPUT.read_text()
    assert committed == render_workers(AGENT_TYPES), "stale: run `.venv/bin/python -m aether_devstack k8s-workers --write`"
    assert PLACEHOLDER not in committed
    executor = [d for d in yaml.safe_load_all((ROOT / "deploy" / "k8s" / "base" / "executor.yaml").read_text()) if d]
    assert [d["metadata"]["name"] for d in executor if d["kind"] == "Deployment"] == ["executor-scheduler"]


def test_an_agent_type_of_ones_own_gets_valid_workers_and_a_bad_name_a_clear_error(tmp_path):
    agents = tmp_path / "agents"
    agents.mkdir()
    (agents / "rust.yaml").write_text(
        "kind: expert\ntype: rust-backend\nname: Rust Backend Expert\ndescription: Axum, Tokio\n"
        "tags: [rust]\nsystem_prompt: You are a senior Rust engineer.\n"
    )
    command = [sys.executable, "-m", "aether_devstack", "k8s-workers", "--agents-dir", str(agents)]
    printed = subprocess.run(command, capture_output=True, text=True, check=True).stdout
    # The deployment of one's own: a copy of deploy/k8s with the rendered file, built as a cluster gets it.
    copy_root = tmp_path / "k8s"
    shutil.copytree(ROOT / "deploy" / "k8s", copy_root)
    (copy_root / "base" / "workers.yaml").write_text(printed)
    built = subprocess.run([kubectl(), "kustomize", str(copy_root / "overlays" / "prod")], capture_output=True, text=True, check=True).stdout
    docs = [d for d in yaml.safe_load_all(built) if d]
    deployments, scaled = of_kind(docs, "Deployment"), of_kind(docs, "ScaledObject")
    for agent_type in [*AGENT_TYPES, "rust-backend"]:
        name = f"executor-{agent_type}"
        assert env_of(deployments[name]["spec"]["template"]["spec"]["containers"][0], docs)["AETHER_AGENT_TYPES"] == agent_type
        assert scaled[name]["spec"]["triggers"][0]["metadata"]["consumer"] == topology.worker_consumer(agent_type).durable
        for doc in (deployments[name], scaled[name]):
            assert not problems(doc, KUBERNETES_VERSIONS[0]), (name, problems(doc, KUBERNETES_VERSIONS[0]))

    # A valid agent type (its pattern allows '_') that cannot name a Deployment.
    (agents / "bad.yaml").write_text((agents / "rust.yaml").read_text().replace("rust-backend", "rust_backend"))
    refused = subprocess.run(command, capture_output=True, text=True)
    assert refused.returncode != 0 and refused.stdout == ""
    assert "rust_backend" in refused.stderr and "Kubernetes" in refused.stderr, refused.stderr


def test_the_gateway_scales_on_cpu():
    for overlay in OVERLAYS:
        hpa = of_kind(render(overlay), "HorizontalPodAutoscaler")["gateway"]["spec"]
        assert hpa["scaleTargetRef"]["name"] == "gateway"
        assert hpa["metrics"][0]["resource"]["name"] == "cpu"


# -- settings ---------------------------------------------------------------------------------


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_manifests_provide_every_setting_a_service_reads_and_no_other(overlay, monkeypatch):
    docs = render(overlay)
    classes = service_settings()
    seen = set()
    for name, service, pod in aether_pods(docs):
        seen.add(service)
        settings = classes[service]
        reads = env_names(settings)
        env = env_of(pod["containers"][0], docs)
        provided = set(env)
        unknown = {n for n in provided - reads if n.startswith("AETHER_")}
        assert not unknown, f"{name} sets {sorted(unknown)}, which {service} does not read"
        unset = dict(UNSET_ON_PURPOSE) | (GATEWAY_UNSET if service == "gateway" else {})
        if env.get("AETHER_EXECUTOR_ROLE") == "scheduler":
            unset["AETHER_AGENT_TYPES"] = "a scheduler runs no subtask"
            unset |= {n: "a scheduler calls no LLM" for n in reads if n.startswith(("AETHER_LLM_", "OPENAI_"))}
        missing = reads - provided - unset.keys()
        assert not missing, f"{name} does not set {sorted(missing)}"

        # The values themselves must be what the service accepts.
        for variable in list(os.environ):
            if variable.startswith(("AETHER_", "OPENAI_", "OTEL_")) or variable == "CORS_ORIGINS":
                monkeypatch.delenv(variable)
        for key, value in env.items():
            monkeypatch.setenv(key, value)
        loaded = settings()
        if service == "executor" and loaded.executor_role == "worker":
            assert loaded.served_types(AGENT_TYPES)
    assert seen == set(SERVICES)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_a_service_ends_its_own_stop_before_the_kubelet_kills_it(overlay):
    """The stop timeout (aether_core.stopping) is longer than the handlers' graceful timeout, so
    it cuts no stop that finishes, and shorter than the pod's grace period, so the service ends a
    stop that hangs itself and logs where it waited, instead of a SIGKILL that says nothing."""
    from aether_core.config import ServiceSettings
    from aether_core.service import GRACEFUL_TIMEOUT_S

    assert GRACEFUL_TIMEOUT_S < ServiceSettings.model_fields["stop_timeout_s"].default
    docs = render(overlay)
    for name, _service, pod in aether_pods(docs):
        env = env_of(pod["containers"][0], docs)
        stop_timeout = float(env["AETHER_STOP_TIMEOUT_S"])
        assert GRACEFUL_TIMEOUT_S < stop_timeout < pod["terminationGracePeriodSeconds"], name


def test_the_unset_settings_exist():
    """An entry here for a setting no service reads any more would hide nothing: drop it."""
    every = set().union(*(env_names(s) for s in service_settings().values()))
    assert set(UNSET_ON_PURPOSE) | set(GATEWAY_UNSET) <= every


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_llm_credentials_come_from_a_secret_that_is_not_in_the_manifests(overlay):
    docs = render(overlay)
    assert not of_kind(docs, "Secret")
    for name, service, pod in aether_pods(docs):
        container = pod["containers"][0]
        keys = {
            e["name"]: e["valueFrom"]["secretKeyRef"]
            for e in container.get("env", [])
            if "secretKeyRef" in e.get("valueFrom", {}) and e["name"] != "AETHER_NATS_URL"
        }
        if service == "gateway" or name == "executor-scheduler":  # neither calls an LLM
            assert not keys, name
            assert "aether-llm" not in str(container.get("envFrom")), name
        else:
            assert keys["OPENAI_API_KEY"]["name"] == "aether-llm"
            assert not keys["OPENAI_API_KEY"].get("optional")
    for config_map in of_kind(docs, "ConfigMap").values():
        assert not {k for k in config_map.get("data", {}) if k.endswith(("_KEY", "_KEYS", "TOKEN"))}


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_each_service_connects_to_nats_as_its_own_user(overlay):
    from aether_contracts.permissions import TOPOLOGY, USERS
    from aether_devstack.nats_secrets import URL_KEYS, generate

    docs = render(overlay)
    used = set()
    for name, service, pod in aether_pods(docs):
        container = pod["containers"][0]
        [url] = [e for e in container["env"] if e["name"] == "AETHER_NATS_URL"]
        ref = url["valueFrom"]["secretKeyRef"]
        role = "agent" if env_of(container, docs).get("AETHER_EXECUTOR_ROLE") == "worker" else service
        assert ref == {"name": "aether-nats-urls", "key": role}, name
        used.add(role)
        # Only the gateway's pods declare the topology, in an init container of their own.
        for init in pod.get("initContainers", []):
            assert service == "gateway" and init["args"] == [TOPOLOGY], name
            [url] = [e for e in init["env"] if e["name"] == "AETHER_NATS_URL"]
            assert url["valueFrom"]["secretKeyRef"] == {"name": "aether-nats-urls", "key": TOPOLOGY}
            used.add(TOPOLOGY)
    assert used == set(URL_KEYS) and used <= set(USERS)
    users, urls, _ = generate("aether", "nats:4222")
    assert set(urls) == used and all(f'user: "{role}"' in users for role in used)

    assert 'include "auth/users.conf"' in nats_conf(docs)
    nats = of_kind(docs, "StatefulSet")["nats"]["spec"]["template"]["spec"]
    mount = next(m for m in nats["containers"][0]["volumeMounts"] if m["mountPath"] == "/etc/nats-config/auth")
    volume = next(v for v in nats["volumes"] if v["name"] == mount["name"])
    assert volume["secret"]["secretName"] == "aether-nats-users" and mount["readOnly"] is True


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_api_keys_come_from_a_secret_mounted_where_the_gateway_reads_them(overlay):
    docs = render(overlay)
    pod = of_kind(docs, "Deployment")["gateway"]["spec"]["template"]["spec"]
    container = pod["containers"][0]
    keys_file = env_of(container, docs)["AETHER_API_KEYS_FILE"]
    assert env_of(container, docs)["AETHER_AUTH"] == "true"
    mount = next(m for m in container["volumeMounts"] if keys_file.startswith(m["mountPath"] + "/"))
    volume = next(v for v in pod["volumes"] if v["name"] == mount["name"])
    assert volume["secret"]["secretName"] == "aether-api-keys"
    assert mount["readOnly"] is True


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_otel_points_every_service_at_jaeger_under_its_own_name(overlay):
    docs = render(overlay)
    jaeger = of_kind(docs, "Service")["jaeger"]
    ports = {p["port"] for p in jaeger["spec"]["ports"]}
    for name, service, pod in aether_pods(docs):
        env = env_of(pod["containers"][0], docs)
        assert env["OTEL_SERVICE_NAME"] == service, name
        endpoint = urlsplit(env["OTEL_EXPORTER_OTLP_ENDPOINT"])
        assert endpoint.hostname == "jaeger" and endpoint.port in ports
        assert (env["OTEL_EXPORTER_OTLP_PROTOCOL"] == "grpc") == (endpoint.port == 4317)


# -- pods ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_pod_is_restricted_limited_and_probed(overlay):
    docs = render(overlay)
    for name, template in workloads(docs):
        spec = template["spec"]
        assert spec["securityContext"]["runAsNonRoot"] is True, name
        assert spec["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault", name
        assert spec.get("automountServiceAccountToken") is False, name
        assert spec["serviceAccountName"] in of_kind(docs, "ServiceAccount"), name
        for container in [*spec["containers"], *spec.get("initContainers", [])]:
            security = container["securityContext"]
            assert security["allowPrivilegeEscalation"] is False, name
            assert security["readOnlyRootFilesystem"] is True, name
            assert security["capabilities"]["drop"] == ["ALL"], name
            assert {"cpu", "memory"} <= container["resources"]["requests"].keys(), name
            assert {"cpu", "memory"} <= container["resources"]["limits"].keys(), name
        for container in spec["containers"]:  # init containers run to their end, unprobed
            assert container["readinessProbe"] and container["livenessProbe"], name


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_service_probes_ask_the_port_the_service_serves_them_on(overlay):
    docs = render(overlay)
    for name, service, pod in aether_pods(docs):
        container = pod["containers"][0]
        env = env_of(container, docs)
        ports = {p["name"]: p["containerPort"] for p in container["ports"]}
        served = int(env["AETHER_HTTP_PORT"] if service == "gateway" else env["AETHER_PROBE_PORT"])
        for probe, path in (("readinessProbe", "/readyz"), ("livenessProbe", "/livez"), ("startupProbe", "/livez")):
            get = container[probe]["httpGet"]
            assert get["path"] == path, (name, probe)
            assert ports[get["port"]] == served, (name, probe)
        annotations = of_kind(docs, "Deployment")[name]["spec"]["template"]["metadata"]["annotations"]
        assert annotations["prometheus.io/scrape"] == "true"
        assert int(annotations["prometheus.io/port"]) == served


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_each_service_has_its_account_service_and_disruption_budget(overlay):
    docs = render(overlay)
    accounts, services, budgets = of_kind(docs, "ServiceAccount"), of_kind(docs, "Service"), of_kind(docs, "PodDisruptionBudget")
    for name, service, pod in aether_pods(docs):
        assert pod["serviceAccountName"] == service in accounts
        assert services[service]["spec"]["selector"] == {"app.kubernetes.io/name": service}
        labels = of_kind(docs, "Deployment")[name]["spec"]["template"]["metadata"]["labels"]
        covering = [
            b for b in budgets.values()
            if b["spec"]["selector"]["matchLabels"].items() <= labels.items()
        ]
        assert len(covering) == 1, name


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_only_the_gateway_is_reachable_from_outside(overlay):
    docs = render(overlay)
    ingresses = of_kind(docs, "Ingress")
    assert list(ingresses) == ["gateway"]
    paths = ingresses["gateway"]["spec"]["rules"][0]["http"]["paths"]
    assert [(p["path"], p["backend"]["service"]["name"]) for p in paths] == [("/", "gateway")]
    assert all(s["spec"].get("type", "ClusterIP") == "ClusterIP" for s in of_kind(docs, "Service").values())
    policies = of_kind(docs, "NetworkPolicy")
    deny = policies["default-deny"]["spec"]
    assert deny["podSelector"] == {} and set(deny["policyTypes"]) == {"Ingress", "Egress"}
    gateway_from = [
        p for p in policies.values()
        if p["spec"]["podSelector"].get("matchLabels") == {"app.kubernetes.io/name": "gateway"}
    ]
    assert [r["ports"] for p in gateway_from for r in p["spec"]["ingress"]] == [[{"protocol": "TCP", "port": 8000}]]


# -- NATS -------------------------------------------------------------------------------------


def test_prod_runs_a_three_node_jetstream_cluster_that_syncs_every_write():
    docs = render("prod")
    statefulset = of_kind(docs, "StatefulSet")["nats"]
    assert statefulset["spec"]["replicas"] == 3
    assert statefulset["spec"]["volumeClaimTemplates"][0]["spec"]["resources"]["requests"]["storage"]
    conf = nats_conf(docs)
    assert re.search(r"^\s*sync_interval:\s*always\s*$", conf, re.MULTILINE)
    routes = re.findall(r"nats://(nats-\d)\.nats-headless:6222", conf)
    assert routes == [f"nats-{i}" for i in range(3)]
    assert configured(docs, "aether-common", "AETHER_NATS_REPLICAS") == "3"
    assert of_kind(docs, "PodDisruptionBudget")["nats"]["spec"]["maxUnavailable"] == 1


def test_dev_runs_one_nats_node_that_syncs_every_write():
    docs = render("dev")
    assert of_kind(docs, "StatefulSet")["nats"]["spec"]["replicas"] == 1
    conf = nats_conf(docs)
    assert not re.search(r"^cluster\s*{", conf, re.MULTILINE)
    assert re.search(r"^\s*sync_interval:\s*always\s*$", conf, re.MULTILINE)
    assert configured(docs, "aether-common", "AETHER_NATS_REPLICAS") == "1"


def test_images_are_the_ones_this_checkout_builds():
    from aether_devstack.images import services
    from tests.support.containers import nats_version

    version = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    for overlay in OVERLAYS:
        images = {
            c["image"] for _, t in workloads(render(overlay)) for c in t["spec"]["containers"]
        }
        built = {s.name for s in services()}
        for service in SERVICES:
            assert f"aether-{service}:{version}" in images
            assert service in built, f"deploy/docker/Dockerfile has no stage {service}"
        # The NATS the tests run is the NATS the manifests deploy.
        assert f"nats:{nats_version()}-alpine" in images
