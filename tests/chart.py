"""The Helm chart as the tests use it: helm itself (rendering, installing), a kubeconfig of a
ServiceAccount's token, and the operator run on the host as the chart's ServiceAccount, with the
installed Deployment's arguments and environment (tests/integration/test_helm.py,
test_allowed_trial_kinds.py)."""

from __future__ import annotations

import json
import os
import subprocess
import urllib.error
import urllib.request
from pathlib import Path

import yaml

from tests import kube

REPO = Path(__file__).resolve().parents[1]
CHART = REPO / "deploy" / "helm" / "hpo-operator"


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


class ChartOperator(kube.OperatorProcess):
    """The operator of an installed release (with replicaCount 0), run on the host as the release's
    ServiceAccount, with its Deployment's arguments and environment: its liveness endpoint and its
    metrics on free ports, `env` laid over the rest."""

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
        merged.update(env or {})
        super().__init__(as_sa, namespace, log_path, args=args, env={k: v for k, v in merged.items() if v is not None})
        self.chart_env = chart_env

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
