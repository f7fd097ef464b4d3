"""Choosing the configuration as kubectl does (hpo_operator.kube.config), once for both clients: the
plugin's connect() (sync client) and the dashboard's (async client) must agree on every answer."""

from __future__ import annotations

import asyncio

import pytest
import yaml

from hpo_operator.client import connection
from hpo_operator.client.errors import HpoError
from hpo_operator.dashboard import cluster
from hpo_operator.kube.config import SA_NAMESPACE_FILE


def _cluster(name: str) -> dict:
    return {"name": name, "cluster": {"server": f"https://{name}.example:6443"}}


@pytest.fixture
def kubeconfig(tmp_path, monkeypatch) -> str:
    monkeypatch.setenv("HOME", str(tmp_path))  # no ~/.kube/config
    monkeypatch.delenv("KUBECONFIG", raising=False)
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    path = tmp_path / "config"
    path.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "current-context": "a",
                "clusters": [_cluster("a"), _cluster("b")],
                "users": [{"name": "u", "user": {"token": "t"}}],
                "contexts": [
                    {"name": "a", "context": {"cluster": "a", "user": "u", "namespace": "team-a"}},
                    {"name": "b", "context": {"cluster": "b", "user": "u"}},
                ],
            }
        )
    )
    return str(path)


def both(kubeconfig: str | None, context: str | None) -> list:
    """What each client's connect() makes of it: (namespace, context, server) or the error's words."""
    answers: list = []
    try:
        s = connection.connect(kubeconfig, context)
        answers.append((s.namespace, s.context, s.api.configuration.host))
    except HpoError as e:
        answers.append(str(e))

    async def dashboard() -> tuple:
        c = await cluster.connect(kubeconfig, context)
        try:
            return c.namespace, c.context, c.api.configuration.host
        finally:
            await c.close()

    try:
        answers.append(asyncio.run(dashboard()))
    except cluster.ConnectError as e:
        answers.append(str(e))
    return answers


def test_both_clients_take_the_active_or_the_named_context_and_its_namespace(kubeconfig):
    assert both(kubeconfig, None) == [("team-a", "a", "https://a.example:6443")] * 2
    assert both(kubeconfig, "b") == [("default", "b", "https://b.example:6443")] * 2


def test_both_clients_say_alike_why_there_is_no_configuration(kubeconfig, tmp_path, monkeypatch):
    assert both(kubeconfig, "c") == ["context c not found in the kubeconfig (contexts: a, b)"] * 2
    assert both(str(tmp_path / "nope"), None) == [f"kubeconfig {tmp_path / 'nope'} does not exist"] * 2
    assert both(None, None) == ["no kubeconfig: pass --kubeconfig, set KUBECONFIG, or create ~/.kube/config"] * 2
    broken = tmp_path / "broken"
    broken.write_text("apiVersion: v1\nkind: Config\ncontexts: []\n")
    assert all(a.startswith(f"kubeconfig {broken}: ") for a in both(str(broken), None))
    if not SA_NAMESPACE_FILE.parent.exists():  # not inside a pod, where in-cluster would work
        monkeypatch.setenv("KUBERNETES_SERVICE_HOST", "10.0.0.1")
        assert all(a.startswith("in-cluster configuration: ") for a in both(None, None))
        # Naming a context means a kubeconfig, even in a pod.
        assert both(None, "a") == ["no kubeconfig: pass --kubeconfig, set KUBECONFIG, or create ~/.kube/config"] * 2
