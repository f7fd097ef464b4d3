"""The CRDs and webhook configurations of one training controller, for a local cluster.

Read from the controller's own Go module source (its generated CRDs and webhook manifests and the
kustomize patches it ships them with), then pointed at a controller running as a host process:
every `clientConfig` becomes `url: https://HOST:PORT/PATH` with the local CA as `caBundle`, since
there is no Service or kube-proxy to reach it through. Written to stdout as one JSON List, which
kubectl applies as its items.

    python3 hack/training/manifests.py jobset|kueue|trainer MODULE_DIR HOST PORT CA_FILE [FRAMEWORK...]

FRAMEWORK (Kueue only) are the integrations Kueue is configured with (`batch/job`, ...): Kueue ships
webhooks for every integration, some matching every pod or Deployment with `failurePolicy: Fail`,
so only those of the enabled integrations (and of Kueue's own kinds) are kept.
"""

from __future__ import annotations

import base64
import copy
import json
import sys
from pathlib import Path
from typing import Any

import yaml

# Where each module keeps its generated manifests (relative to its root).
LAYOUT = {
    "jobset": ("config/components/crd", "config/components/webhook"),
    "kueue": ("config/components/crd", "config/components/webhook"),
    "trainer": ("manifests/base/crds", "manifests/base/webhook"),
}
# The label that marks what hack/training.sh installed, so that `down` can remove it again.
LABEL = "hpo.dev/training-controller"
# libyaml's parser when PyYAML has it: the CRDs are megabytes of YAML.
Loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
# Kueue's integration names, as (API group, resource) pairs its webhook rules name.
KUEUE_FRAMEWORKS = {
    "batch/job": ("batch", "jobs"),
    "jobset.x-k8s.io/jobset": ("jobset.x-k8s.io", "jobsets"),
    "trainer.kubeflow.org/trainjob": ("trainer.kubeflow.org", "trainjobs"),
    "pod": ("", "pods"),
}
# Kueue's label naming a workload's LocalQueue. Its pod webhooks see only pods that carry it: a
# plain pod without a queue is none of Kueue's business (manageJobsWithoutQueueName is off), and
# every other pod of the cluster (thousands in the scale tests) is created without the detour.
QUEUE_LABEL = "kueue.x-k8s.io/queue-name"


def load(text: str) -> Any:
    return yaml.load(text, Loader=Loader)


def load_all(path: Path) -> list[Any]:
    return [doc for doc in yaml.load_all(path.read_text(), Loader=Loader) if doc]


def kustomization(folder: Path) -> dict[str, Any]:
    return load((folder / "kustomization.yaml").read_text()) or {}


def json6902(doc: Any, ops: list[dict[str, Any]]) -> None:
    """The `add` and `replace` operations of a JSON patch (all the shipped patches use)."""
    for op in ops:
        if op["op"] not in ("add", "replace"):
            raise SystemExit(f"unsupported patch operation {op['op']!r}")
        *parents, last = [part.replace("~1", "/").replace("~0", "~") for part in op["path"].split("/")[1:]]
        target = doc
        for part in parents:
            target = target[int(part)] if isinstance(target, list) else target[part]
        if isinstance(target, list):
            index = len(target) if last == "-" else int(last)
            if op["op"] == "add":
                target.insert(index, op["value"])
            else:
                target[index] = op["value"]
        else:
            target[last] = op["value"]


def merge_webhooks(doc: dict[str, Any], patch: dict[str, Any]) -> None:
    """A strategic merge of a webhook configuration: webhook entries merge by name."""
    by_name = {hook["name"]: hook for hook in doc.get("webhooks", [])}
    for hook in patch.get("webhooks", []):
        if hook["name"] in by_name:
            by_name[hook["name"]].update({k: v for k, v in hook.items() if k != "name"})


def patched_webhooks(folder: Path) -> list[dict[str, Any]]:
    """The webhook configurations as upstream's kustomization patches them."""
    docs = [doc for res in kustomization(folder).get("resources", []) for doc in load_all(folder / res)]
    docs = [doc for doc in docs if doc.get("kind", "").endswith("WebhookConfiguration")]
    for entry in kustomization(folder).get("patches", []):
        patch = load(entry["patch"]) if "patch" in entry else load((folder / entry["path"]).read_text())
        target = entry.get("target", {})
        for doc in docs:
            if isinstance(patch, list):
                if doc["kind"] == target.get("kind") and target.get("name") in (None, doc["metadata"]["name"]):
                    json6902(doc, patch)
            elif doc["kind"] == patch.get("kind") and doc["metadata"]["name"] == patch["metadata"]["name"]:
                merge_webhooks(doc, patch)
    return docs


def conversion_paths(folder: Path) -> dict[str, str]:
    """CRD name -> conversion webhook path, for the CRDs upstream's kustomization converts."""
    paths = {}
    for entry in kustomization(folder).get("patches", []):
        if "path" not in entry:
            continue
        patch = load((folder / entry["path"]).read_text())
        webhook = (patch.get("spec", {}).get("conversion") or {}).get("webhook")
        if webhook:
            paths[patch["metadata"]["name"]] = webhook["clientConfig"]["service"]["path"]
    return paths


def crds(folder: Path, client: Any) -> list[dict[str, Any]]:
    docs = [doc for res in kustomization(folder).get("resources", []) for doc in load_all(folder / res)]
    converted = conversion_paths(folder)
    for doc in docs:
        doc["metadata"].setdefault("labels", {})[LABEL] = "true"
        path = converted.get(doc["metadata"]["name"])
        # A CRD of one version is never converted: its patch is left out.
        if path and len(doc["spec"]["versions"]) > 1:
            doc["spec"]["conversion"] = {
                "strategy": "Webhook",
                "webhook": {"clientConfig": client(path), "conversionReviewVersions": ["v1"]},
            }
    return docs


def kept(hook: dict[str, Any], frameworks: list[str]) -> bool:
    """Whether a Kueue webhook belongs to Kueue's own kinds or to an enabled integration."""
    allowed = {KUEUE_FRAMEWORKS[name] for name in frameworks}
    for rule in hook.get("rules", []):
        for group in rule["apiGroups"]:
            if group != "kueue.x-k8s.io" and not any((group, res) in allowed for res in rule["resources"]):
                return False
    return True


def webhooks(controller: str, folder: Path, client: Any, frameworks: list[str]) -> list[dict[str, Any]]:
    docs = []
    for doc in patched_webhooks(folder):
        doc = copy.deepcopy(doc)
        short = "mutating" if doc["kind"].startswith("Mutating") else "validating"
        doc["metadata"] = {"name": f"{controller}-{short}", "labels": {LABEL: "true"}}
        hooks = doc.get("webhooks", [])
        if controller == "kueue":
            hooks = [hook for hook in hooks if kept(hook, frameworks)]
            for hook in hooks:
                if any("pods" in rule["resources"] for rule in hook.get("rules", [])):
                    hook["objectSelector"] = {"matchExpressions": [{"key": QUEUE_LABEL, "operator": "Exists"}]}
        for hook in hooks:
            hook["clientConfig"] = client(hook["clientConfig"]["service"]["path"])
        doc["webhooks"] = hooks
        docs.append(doc)
    return docs


def main(argv: list[str]) -> None:
    if len(argv) < 5 or argv[0] not in LAYOUT:
        raise SystemExit(__doc__)
    controller, module, host, port, ca_file, *frameworks = argv
    unknown = [name for name in frameworks if name not in KUEUE_FRAMEWORKS]
    if unknown:
        raise SystemExit(f"unknown Kueue integration(s) {unknown}; known: {sorted(KUEUE_FRAMEWORKS)}")
    ca_bundle = base64.b64encode(Path(ca_file).read_bytes()).decode()

    def client(path: str) -> dict[str, str]:
        return {"url": f"https://{host}:{port}{path}", "caBundle": ca_bundle}

    crd_folder, webhook_folder = (Path(module) / sub for sub in LAYOUT[controller])
    docs = crds(crd_folder, client) + webhooks(controller, webhook_folder, client, frameworks)
    json.dump({"apiVersion": "v1", "kind": "List", "items": docs}, sys.stdout)


if __name__ == "__main__":
    main(sys.argv[1:])
