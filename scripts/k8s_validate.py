"""Validate deploy/k8s offline: schemas, and what schemas cannot see.

1. Every resource listed in kustomization.yaml validates strictly against the Kubernetes
   OpenAPI schema (kubernetes-validate, bundled schemas, no cluster needed).
2. Every ``TMSP_*`` variable a container sets is a real setting of that service (a typo
   would otherwise be silently ignored by pydantic-settings).
3. Every Deployment has readiness and liveness probes, a termination grace period longer than
   the service's drain, resource requests and a non-root, read-only security context.
"""

from __future__ import annotations

import importlib
import sys
from pathlib import Path
from typing import Any

import kubernetes_validate
import yaml

ROOT = Path(__file__).resolve().parent.parent
K8S = ROOT / "deploy" / "k8s"
K8S_VERSION = "1.31.0"
MIN_GRACE_SECONDS = 30
SHARED = {
    "TMSP_KAFKA_BOOTSTRAP",
    "TMSP_MONGO_URL",
    "TMSP_TOPIC_PREFIX",
    "TMSP_LOG_LEVEL",
    "TMSP_LOG_FORMAT",
    "TMSP_TLS_DIR",
}


def settings_names(service: str) -> set[str]:
    module = importlib.import_module(f"tmsp_{service}.config")
    names: set[str] = set(SHARED)
    for obj in vars(module).values():
        if isinstance(obj, type) and hasattr(obj, "env_name") and hasattr(obj, "model_fields"):
            names.update(obj.env_name(field) for field in obj.model_fields)
    return names


def check_deployment(doc: dict[str, Any], problems: list[str]) -> None:
    name = doc["metadata"]["name"]
    service = name.removeprefix("tmsp-")
    spec = doc["spec"]["template"]["spec"]
    if spec.get("terminationGracePeriodSeconds", 30) < MIN_GRACE_SECONDS:
        problems.append(f"{name}: terminationGracePeriodSeconds below {MIN_GRACE_SECONDS}")
    if not spec.get("securityContext", {}).get("runAsNonRoot"):
        problems.append(f"{name}: pod must run as non-root")
    try:
        known = settings_names(service)
    except ModuleNotFoundError:
        problems.append(f"{name}: no settings module tmsp_{service}.config")
        known = set(SHARED)
    for container in spec["containers"]:
        for probe in ("readinessProbe", "livenessProbe"):
            if probe not in container:
                problems.append(f"{name}/{container['name']}: no {probe}")
        if "requests" not in container.get("resources", {}):
            problems.append(f"{name}/{container['name']}: no resource requests")
        if not container.get("securityContext", {}).get("readOnlyRootFilesystem"):
            problems.append(f"{name}/{container['name']}: root filesystem must be read-only")
        for env in container.get("env", []):
            if env["name"].startswith("TMSP_") and env["name"] not in known:
                problems.append(f"{name}: {env['name']} is not a setting of {service}")


def main() -> int:
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    problems: list[str] = []
    checked = 0
    for resource in kustomization["resources"]:
        path = K8S / resource
        for doc in yaml.safe_load_all(path.read_text()):
            if not doc:
                continue
            try:
                kubernetes_validate.validate(doc, K8S_VERSION, strict=True)
            except kubernetes_validate.ValidationError as exc:
                problems.append(f"{resource}: {doc.get('kind')}: {exc.message}")
            if doc.get("kind") == "Deployment":
                check_deployment(doc, problems)
            checked += 1
    for problem in problems:
        print(f"k8s-validate: {problem}", file=sys.stderr)
    print(f"k8s-validate: {checked} resources checked, {len(problems)} problems")
    return 1 if problems else 0


if __name__ == "__main__":
    raise SystemExit(main())
