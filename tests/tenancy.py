"""The chart's tenancy with the operator on this host: the chart's own objects (its admission
webhook's configuration, the trial ServiceAccount and its RBAC), the webhook pointed at a local
operator process that the real API server calls over loopback, and that process's environment.

In a cluster the API server calls the webhook through the chart's Service; here the operator runs as
a process, so its webhook's configuration gets a `url` on 127.0.0.1 and a certificate made for that
address (tests/integration/test_in_cluster.py covers the Service path on the real node)."""

from __future__ import annotations

import base64
import secrets
import subprocess
from dataclasses import dataclass
from pathlib import Path

from kubernetes import client

from tests.kube import Helm, free_port


@dataclass
class Webhook:
    """A served admission webhook's files and port."""

    port: int
    cert: Path
    key: Path
    author_key: Path

    @classmethod
    def make(cls, folder: Path) -> Webhook:
        folder.mkdir(parents=True, exist_ok=True)
        cert, key = folder / "tls.crt", folder / "tls.key"
        subprocess.run(
            [
                "openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
                "-keyout", str(key), "-out", str(cert), "-subj", "/CN=127.0.0.1",
                "-addext", "subjectAltName=IP:127.0.0.1",
            ],
            check=True,
            capture_output=True,
        )  # fmt: skip
        author_key = folder / "author.key"
        author_key.write_text(secrets.token_urlsafe(48))
        return cls(free_port(), cert, key, author_key)

    def env(self, operator_user: str | None = None) -> dict[str, str]:
        """The operator's environment for serving it (as the chart sets it, with these files)."""
        env = {
            "HPO_ADMISSION_PORT": str(self.port),
            "HPO_ADMISSION_CERT_FILE": str(self.cert),
            "HPO_ADMISSION_KEY_FILE": str(self.key),
            "HPO_AUTHOR_KEY_FILE": str(self.author_key),
        }
        if operator_user:
            env["HPO_OPERATOR_USERNAME"] = operator_user
        return env

    def point_at_host(self, api: client.ApiClient, configuration: str) -> None:
        """The chart's MutatingWebhookConfiguration, calling this host's webhook instead of the
        Service (its rules, conditions and failure policy unchanged)."""
        admission = client.AdmissionregistrationV1Api(api)
        config = admission.read_mutating_webhook_configuration(configuration)
        ca = base64.b64encode(self.cert.read_bytes()).decode()
        patch = {
            "webhooks": [
                {
                    "name": w.name,
                    "clientConfig": {"url": f"https://127.0.0.1:{self.port}/author", "caBundle": ca, "service": None},
                }
                for w in config.webhooks
            ]
        }
        admission.patch_mutating_webhook_configuration(configuration, patch)


def webhook_configuration(api: client.ApiClient, release: str) -> str:
    """The name of the release's MutatingWebhookConfiguration."""
    found = client.AdmissionregistrationV1Api(api).list_mutating_webhook_configuration(
        label_selector=f"app.kubernetes.io/instance={release}"
    )
    (config,) = found.items
    return config.metadata.name


def host_objects(helm: Helm, release: str, namespace: str, operator_user: str, webhook: Webhook) -> list[dict]:
    """What the chart's tenancy makes for `namespace` (the trial account, its ClusterRole and
    RoleBinding, the webhook's configuration), for an operator run on this host as `operator_user`:
    the webhook's configuration calls this host and skips that user's writes."""
    values = ("--set", "watch.scope=namespace", "--set", f"watch.namespaces={{{namespace}}}")
    docs = helm.template(*values, release=release, namespace=namespace)
    kept = []
    for doc in docs:
        if doc["kind"] == "MutatingWebhookConfiguration":
            for hook in doc["webhooks"]:
                hook["clientConfig"] = {
                    "url": f"https://127.0.0.1:{webhook.port}/author",
                    "caBundle": base64.b64encode(webhook.cert.read_bytes()).decode(),
                }
                hook["matchConditions"] = [
                    {"name": "not-the-operator", "expression": f"request.userInfo.username != {operator_user!r}"}
                ]
            kept.append(doc)
        elif (
            doc["metadata"]["name"].endswith("-trial-runner")
            or doc["kind"] == "ServiceAccount"
            and doc["metadata"]["name"] == "hpo-trial-runner"
        ):
            kept.append(doc)
    return kept
