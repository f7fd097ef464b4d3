"""The Helm chart as the tests use it: helm itself (rendering, installing), a kubeconfig of a
ServiceAccount's token, and the operator run on the host as the chart's ServiceAccount, with the
installed Deployment's arguments and environment (tests/integration/test_helm.py,
test_allowed_trial_kinds.py, test_tenancy.py).

With the chart's tenancy (its default), that operator also serves the admission webhook. In a
cluster the API server calls it through the chart's Service; here the release's webhook
configuration gets a `url` on 127.0.0.1 and a certificate made for that address (Webhook;
tests/integration/test_in_cluster.py covers the Service path on the real node)."""

from __future__ import annotations

import base64
import json
import os
import secrets
import subprocess
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import yaml

from tests.support import kube

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "deploy" / "helm" / "hpo-operator"


# What a release makes outside its namespace.
CLUSTER_SCOPED = (
    "clusterrole,clusterrolebinding,mutatingwebhookconfiguration,"
    "validatingadmissionpolicy,validatingadmissionpolicybinding"
)


class Helm:
    def __init__(self, binary: str, home: Path):
        self.binary = binary
        # Helm's own config and caches go to a scratch directory, not the user's.
        self.env = {
            **os.environ,
            "HELM_CONFIG_HOME": str(home / "config"),
            "HELM_CACHE_HOME": str(home / "cache"),
            "HELM_DATA_HOME": str(home / "data"),
        }

    def run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        proc = subprocess.run([self.binary, *args], capture_output=True, text=True, env=self.env, timeout=120)
        if check and proc.returncode != 0:
            raise AssertionError(f"helm {' '.join(args)} failed:\n{proc.stdout}\n{proc.stderr}")
        return proc

    def remove(self, release: str, kubeconfig: str, namespace: str, kubectl: kube.Kubectl | None = None) -> None:
        """Uninstalls the release, if it is there, and (with `kubectl`) deletes what it made outside
        its namespace should the uninstall have failed: on a cluster shared by other tests, its
        admission webhook or trial-kinds policy would go on judging their Experiments."""
        self.run(
            "uninstall", release, "--kubeconfig", kubeconfig, "--namespace", namespace, "--ignore-not-found", "--wait",
            check=False,
        )  # fmt: skip
        if kubectl is not None:
            kubectl.run(
                "delete",
                CLUSTER_SCOPED,
                "-l",
                f"app.kubernetes.io/instance={release}",
                "--ignore-not-found",
                check=False,
            )

    def template(self, *args: str, release: str = "hpo", namespace: str = "hpo-system") -> list[dict]:
        out = self.run("template", release, str(CHART), "--namespace", namespace, *args).stdout
        return [doc for doc in yaml.safe_load_all(out) if doc]


def token_kubeconfig(admin_kubeconfig: str, token: str, path: Path) -> str:
    """A kubeconfig with the admin kubeconfig's server and CA, authenticated by the token only."""
    admin = yaml.safe_load(Path(admin_kubeconfig).read_text())
    context_name = admin.get("current-context") or admin["contexts"][0]["name"]
    context = next(c for c in admin["contexts"] if c["name"] == context_name)["context"]
    cluster = dict(next(c for c in admin["clusters"] if c["name"] == context["cluster"])["cluster"])
    ca = cluster.get("certificate-authority")
    if ca and not Path(ca).is_absolute():  # relative to the kubeconfig it came from
        cluster["certificate-authority"] = str(Path(admin_kubeconfig).resolve().parent / ca)
    path.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [{"name": "test", "cluster": cluster}],
                "users": [{"name": "operator", "user": {"token": token}}],
                "contexts": [{"name": "operator", "context": {"cluster": "test", "user": "operator"}}],
                "current-context": "operator",
            }
        )
    )
    path.chmod(0o600)
    return str(path)


HOST_SUFFIX = "-on-this-host"
# A match condition that turns a webhook off (the release's own, while this host serves it).
OFF_CONDITION = {"name": "served-on-this-host", "expression": "false"}


@dataclass
class Webhook:
    """An admission webhook served on this host: its certificate for 127.0.0.1, its signing key,
    its port."""

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
        return cls(kube.free_port(), cert, key, author_key)

    def env(self, operator_user: str | None = None) -> dict[str, str]:
        """The operator's environment to serve it (as the chart sets it, with these files)."""
        env = {
            "HPO_ADMISSION_PORT": str(self.port),
            "HPO_ADMISSION_CERT_FILE": str(self.cert),
            "HPO_ADMISSION_KEY_FILE": str(self.key),
            "HPO_AUTHOR_KEY_FILE": str(self.author_key),
        }
        if operator_user:
            env["HPO_OPERATOR_USERNAME"] = operator_user
        return env

    def client_config(self) -> dict:
        """A webhook's clientConfig that calls this host."""
        return {
            "url": f"https://127.0.0.1:{self.port}/author",
            "caBundle": base64.b64encode(self.cert.read_bytes()).decode(),
        }

    def point_release_here(self, kubectl: kube.Kubectl, release: str) -> str:
        """The release's admission webhook, served here: a MutatingWebhookConfiguration of this
        host's (the release's rules, conditions and failure policy, calling this host), and the
        release's own turned off by one more match condition that is never true. Helm keeps that
        condition across `helm upgrade` (it changes only what its manifests change), whereas a
        changed clientConfig would come back beside the Service. Returns the new configuration's
        name (remove it with `forget`)."""
        found = json.loads(
            kubectl.run(
                "get", "mutatingwebhookconfiguration", "-l", f"app.kubernetes.io/instance={release}", "-o", "json"
            ).stdout
        )["items"]
        (config,) = [c for c in found if not c["metadata"]["name"].endswith(HOST_SUFFIX)]
        name = config["metadata"]["name"] + HOST_SUFFIX
        hooks = [{**w, "clientConfig": self.client_config()} for w in config["webhooks"]]
        labels = config["metadata"].get("labels") or {}
        here = {
            "apiVersion": "admissionregistration.k8s.io/v1",
            "kind": "MutatingWebhookConfiguration",
            "metadata": {
                "name": name,
                "labels": {"app.kubernetes.io/instance": labels.get("app.kubernetes.io/instance", "")},
            },
            "webhooks": hooks,
        }
        kubectl.run("apply", "-f", "-", input=json.dumps(here))
        off = {"webhooks": [{"name": w["name"], "matchConditions": [OFF_CONDITION]} for w in config["webhooks"]]}
        kubectl.run(
            "patch",
            "mutatingwebhookconfiguration",
            config["metadata"]["name"],
            "--type=strategic",
            "-p",
            json.dumps(off),
        )
        return name

    @staticmethod
    def forget(kubectl: kube.Kubectl, name: str) -> None:
        kubectl.run("delete", "mutatingwebhookconfiguration", name, "--ignore-not-found", check=False)


def host_objects(helm: Helm, release: str, namespace: str, operator_user: str, webhook: Webhook) -> list[dict]:
    """What the chart's tenancy makes for `namespace` (the trial account, its ClusterRole and
    RoleBinding, the webhook's configuration), for an operator run on this host as `operator_user`:
    the webhook's configuration calls this host and skips that user's writes (bench/scale.py)."""
    values = ("--set", "watch.scope=namespace", "--set", f"watch.namespaces={{{namespace}}}")
    kept = []
    for doc in helm.template(*values, release=release, namespace=namespace):
        if doc["kind"] == "MutatingWebhookConfiguration":
            for hook in doc["webhooks"]:
                hook["clientConfig"] = webhook.client_config()
                hook["matchConditions"] = [
                    {"name": "not-the-operator", "expression": f"request.userInfo.username != {operator_user!r}"}
                ]
            kept.append(doc)
        elif doc["metadata"]["name"].endswith("-trial-runner") or doc["metadata"]["name"] == "hpo-trial-runner":
            kept.append(doc)
    return kept


class ChartOperator(kube.OperatorProcess):
    """The operator of an installed release (with replicaCount 0), run on the host as the release's
    ServiceAccount, with its Deployment's arguments and environment: its liveness endpoint and its
    metrics on free ports, `env` laid over the rest. With the chart's tenancy, it serves the
    admission webhook (Webhook), which the release's configuration then calls."""

    def __init__(
        self,
        kubectl: kube.Kubectl,
        kubeconfig: str,
        namespace: str,
        release: str,
        log_path: Path,
        env: dict[str, str | None] | None = None,
    ):
        sa = f"{release}-hpo-operator"
        token = kubectl.run("create", "token", sa, "-n", namespace, "--duration=1h").stdout.strip()
        as_sa = token_kubeconfig(kubeconfig, token, log_path.with_suffix(".kubeconfig"))
        dep = json.loads(kubectl.run("get", "deployment", sa, "-n", namespace, "-o", "json").stdout)
        (container,) = dep["spec"]["template"]["spec"]["containers"]
        self.health_port = kube.free_port()
        args = [
            f"--liveness=http://127.0.0.1:{self.health_port}/healthz" if a.startswith("--liveness=") else a
            for a in container["args"]
        ]
        # POD_NAME comes from the downward API in a pod; here the election uses the release's
        # Lease under this name.
        chart_env = {e["name"]: e.get("value") for e in container.get("env", [])}
        merged = {**chart_env, "POD_NAME": "operator-on-the-host", "HPO_METRICS_PORT": str(kube.free_port())}
        self.webhook, self.served_here = None, None
        if chart_env.get("HPO_ADMISSION_PORT"):
            self.webhook = Webhook.make(log_path.parent / f"{release}-webhook")
            self.served_here = self.webhook.point_release_here(kubectl, release)
            merged.update(self.webhook.env())
        self.kubectl = kubectl
        merged.update(env or {})
        super().__init__(as_sa, namespace, log_path, args=args, env={k: v for k, v in merged.items() if v is not None})
        self.chart_env = chart_env

    def stop(self) -> None:
        super().stop()
        if self.served_here is not None:  # no webhook is served here any more
            Webhook.forget(self.kubectl, self.served_here)
            self.served_here = None

    def health(self) -> tuple[int, str]:
        """The liveness endpoint's HTTP status (the chart's probe) and body; 0 while it does not
        answer."""
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.health_port}/healthz", timeout=5) as response:
                return response.status, response.read().decode()
        except urllib.error.HTTPError as e:
            return e.code, e.read().decode(errors="replace")
        except OSError:
            return 0, ""

    def liveness(self) -> int:
        return self.health()[0]

    def wait_acting(self, timeout: float = 60) -> None:
        """Waits until it leads and kopf serves the liveness endpoint (its probes' answers, among
        them "watches"): a standby answers there too, and the port is closed for a moment between
        the two."""
        kube.wait_until(
            lambda: (h := self.health())[0] == 200 and '"watches"' in h[1],
            timeout=timeout,
            what="the operator to lead and serve kopf's liveness endpoint",
        )
