"""The Kubernetes manifests as a cluster would receive them: rendered by `kubectl kustomize`,
checked against the Kubernetes schemas (kubernetes-validate, strict) and, for KEDA's
ScaledObject, against the schema vendored in deploy/k8s/schemas."""

from __future__ import annotations

import functools
import shutil
import subprocess
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "deploy" / "k8s"
OVERLAYS = ("dev", "prod")
KUBERNETES_VERSIONS = ("1.30.0", "1.37.0")
"""The oldest Kubernetes the manifests are meant for, and the newest kubernetes-validate knows."""

CRD_SCHEMAS = {("keda.sh/v1alpha1", "ScaledObject"): K8S / "schemas" / "scaledobject.keda.sh.v1alpha1.yaml"}


def kubectl() -> str:
    found = shutil.which("kubectl")
    if found is None:
        raise RuntimeError("kubectl not found: it renders the kustomizations (`kubectl kustomize`)")
    return found


@functools.cache
def _render(path: str) -> str:
    return subprocess.run(
        [kubectl(), "kustomize", path], capture_output=True, text=True, check=True
    ).stdout


def render(overlay: str) -> list[dict[str, Any]]:
    """A fresh copy of the overlay's documents (tests may change them)."""
    return [d for d in yaml.safe_load_all(_render(str(K8S / "overlays" / overlay))) if d]


@functools.cache
def _crd_validator(api_version: str, kind: str):
    import jsonschema

    schema = yaml.safe_load(CRD_SCHEMAS[(api_version, kind)].read_text())
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(schema)


def problems(doc: dict[str, Any], version: str) -> list[str]:
    """What is wrong with one document; empty when it is valid."""
    from kubernetes_validate import utils

    key = (doc.get("apiVersion"), doc.get("kind"))
    if key in CRD_SCHEMAS:
        return [
            f"{'.'.join(map(str, e.absolute_path)) or '<root>'}: {e.message}"
            for e in _crd_validator(*key).iter_errors(doc)
        ]
    try:
        utils.validate(doc, version, strict=True)
    except utils.SchemaNotFoundError:
        return [f"no schema for {key}: vendor it under deploy/k8s/schemas"]
    except utils.ValidationError as exc:
        return [f"{'.'.join(map(str, exc.path)) or '<root>'}: {exc.message}"]
    return []


def localised(conf: str, replacements: dict[str, str]) -> str:
    """A deployed nats.conf with local addresses and paths. Each deployed line must be there
    exactly once: a configuration of another shape would run something other than what is
    deployed, so the test fails instead."""
    for deployed, local in replacements.items():
        assert conf.count(deployed) == 1, f"{deployed!r} not found once in nats.conf"
        conf = conf.replace(deployed, local)
    return conf


def of_kind(docs: list[dict[str, Any]], kind: str) -> dict[str, dict[str, Any]]:
    return {d["metadata"]["name"]: d for d in docs if d["kind"] == kind}


def env_of(container: dict[str, Any], docs: list[dict[str, Any]]) -> dict[str, str]:
    """The environment a container gets, with what only a cluster knows stood in for."""
    config_maps = of_kind(docs, "ConfigMap")
    env: dict[str, str] = {}
    for source in container.get("envFrom", []):
        env.update(config_maps[source["configMapRef"]["name"]]["data"])
    for item in container.get("env", []):
        if "value" in item:
            env[item["name"]] = item["value"]
        elif "fieldRef" in item.get("valueFrom", {}):
            env[item["name"]] = "aether-pod-0"
        elif "secretKeyRef" in item.get("valueFrom", {}):
            env[item["name"]] = f"secret:{item['valueFrom']['secretKeyRef']['key']}"
        else:
            raise AssertionError(f"unexpected env source {item}")
    return env


def nats_conf(docs: list[dict[str, Any]]) -> str:
    """The nats-server configuration file the overlay deploys."""
    config_map = next(c for n, c in of_kind(docs, "ConfigMap").items() if n.startswith("nats-config-"))
    return config_map["data"]["nats.conf"]
