"""Helpers the tests share: kubectl, polling, the operator as a subprocess, a test namespace's
Experiments, Trials and pods through the API (Cluster, PodConcurrency), and pod logs that KWOK
serves (write_log, serve_log)."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml
from kubernetes import client, watch

from tests.support.experiments import GROUP, VERSION

REPO = Path(__file__).resolve().parents[2]


def wait_until(
    predicate: Callable[[], Any], timeout: float = 60, interval: float = 0.3, what: str = "the condition"
) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Kubectl:
    def __init__(self, binary: str, kubeconfig: str):
        self.binary = binary
        self.kubeconfig = kubeconfig

    def run(self, *args: str, input: str | None = None, check: bool = True) -> subprocess.CompletedProcess:
        proc = subprocess.run(
            [self.binary, "--kubeconfig", self.kubeconfig, *args],
            input=input,
            capture_output=True,
            text=True,
            timeout=120,
        )
        if check and proc.returncode != 0:
            raise AssertionError(f"kubectl {' '.join(args)} failed:\n{proc.stderr}")
        return proc

    def apply(self, manifest: dict | str, namespace: str, check: bool = True) -> subprocess.CompletedProcess:
        text = manifest if isinstance(manifest, str) else yaml.safe_dump(manifest)
        return self.run("apply", "-n", namespace, "-f", "-", input=text, check=check)

    def get(self, kind: str, name: str, namespace: str) -> dict:
        return yaml.safe_load(self.run("get", kind, name, "-n", namespace, "-o", "yaml").stdout)


# A refused request, as kopf or the kubernetes client log it ("status=403", "'code': 403",
# "Code: 403", "Forbidden"), but not the milliseconds of a timestamp (",403").
REFUSED = re.compile(r"(?<![\w,.:-])403(?!\w)|forbidden|not enough permissions", re.IGNORECASE)


class OperatorProcess:
    """The operator as users run it (`python -m hpo_operator`), scoped to one namespace.

    `kubeconfig` is the identity it runs as (for example a ServiceAccount token's kubeconfig);
    `args` replace the default kopf options (`--namespace NAMESPACE --standalone`) and `env` adds to
    (or overrides) the environment.
    """

    def __init__(
        self,
        kubeconfig: str,
        namespace: str,
        log_path: Path,
        *,
        args: list[str] | None = None,
        env: dict[str, str] | None = None,
    ):
        self.kubeconfig = kubeconfig
        self.namespace = namespace
        self.log_path = log_path
        self.args = list(args) if args is not None else ["--namespace", namespace, "--standalone"]
        self.env = dict(env or {})
        # Its Prometheus metrics, on a port of its own unless `env` names one: they tell how many
        # rounds it has run (wait_for_rounds).
        self.env.setdefault("HPO_METRICS_PORT", str(free_port()))
        self.metrics_port = int(self.env["HPO_METRICS_PORT"])
        self.proc: subprocess.Popen | None = None
        self.starts = 0

    def start(self) -> None:
        env = {
            **os.environ,
            "KUBECONFIG": self.kubeconfig,
            "PYTHONUNBUFFERED": "1",
            "HPO_RECONCILE_INTERVAL": "1",
            **self.env,
        }
        log = open(self.log_path, "a")
        log.write(f"--- start {self.starts + 1}\n")
        log.flush()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "hpo_operator", *self.args], env=env, stdout=log, stderr=subprocess.STDOUT, cwd=REPO
        )
        self.starts += 1

    def kill(self) -> None:
        """SIGKILL: no cleanup, no chance to finish what it was doing."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=10)

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def metrics(self) -> dict[str, float]:
        """Its hpo_* samples, by name and labels; empty while it serves none (not started yet)."""
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=5) as response:
                text = response.read().decode()
        except OSError:
            return {}
        return {
            line.rsplit(" ", 1)[0]: float(line.rsplit(" ", 1)[1])
            for line in text.splitlines()
            if line.startswith("hpo_")
        }

    def rounds(self) -> int | None:
        """Experiment rounds it has finished without error (hpo_reconcile_total), or None."""
        samples = self.metrics()
        return int(samples.get('hpo_reconcile_total{result="success"}', 0)) if samples else None

    def wait_for_rounds(self, wake: Callable[[], object], rounds: int = 1, timeout: float = 60) -> None:
        """Waits until it has run `rounds` whole rounds that began after this call: for a test to
        see that something does not happen (an experiment's loop acts only in its rounds).

        The round that finishes first may have begun before the call, so the count must grow by
        rounds + 1. A finished experiment's loop sleeps until woken, so `wake` (for example an
        annotation on the Experiment) is called at every poll."""
        before = wait_until(
            lambda: (n := self.rounds()) is not None and [n], timeout=timeout, what="the operator's metrics"
        )[0]

        def done() -> bool:
            n = self.rounds()
            if n is not None and n > before + rounds:
                return True
            wake()
            return False

        wait_until(done, timeout=timeout, what=f"{rounds} round(s) of the operator")

    def log(self) -> str:
        return self.log_path.read_text() if self.log_path.exists() else ""

    def refused_own_requests(self) -> list[str]:
        """Log lines of a request of the operator's that the API server refused (but its health
        endpoint's access log)."""
        return [line for line in self.log().splitlines() if REFUSED.search(line) and '"GET /healthz' not in line]

    def failed_output(self) -> str:
        text = self.log()
        return text if "Traceback" in text else ""


class Cluster:
    def __init__(self, api: client.ApiClient, namespace: str):
        self.custom = client.CustomObjectsApi(api)
        self.core = client.CoreV1Api(api)
        self.ns = namespace

    def create(self, body: dict, plural: str = "experiments") -> dict:
        return self.custom.create_namespaced_custom_object(GROUP, VERSION, self.ns, plural, body)

    def get(self, name: str, plural: str = "experiments") -> dict:
        return self.custom.get_namespaced_custom_object(GROUP, VERSION, self.ns, plural, name)

    def patch(self, name: str, body: dict, plural: str = "experiments") -> dict:
        return self.custom.patch_namespaced_custom_object(GROUP, VERSION, self.ns, plural, name, body)

    def poke(self, name: str) -> None:
        """Wakes the experiment's loop in the operator: any change to the Experiment does."""
        self.patch(name, {"metadata": {"annotations": {"test.hpo.dev/poke": str(time.monotonic_ns())}}})

    def trials(self) -> dict[str, dict]:
        items = self.custom.list_namespaced_custom_object(GROUP, VERSION, self.ns, "trials")["items"]
        return {t["metadata"]["name"]: t for t in items}

    def pods(self) -> dict[str, client.V1Pod]:
        return {p.metadata.name: p for p in self.core.list_namespaced_pod(self.ns).items}

    def workloads(self, kind: str) -> set[str]:
        """What the trials run as, by name: their pods, or their Jobs."""
        if kind == "job":
            return {j.metadata.name for j in client.BatchV1Api(self.core.api_client).list_namespaced_job(self.ns).items}
        return set(self.pods())

    def events(self, reason: str) -> list[client.CoreV1Event]:
        return [e for e in self.core.list_namespaced_event(self.ns).items if e.reason == reason]

    def wait_events(self, reason: str, at_least: int = 1, timeout: float = 30) -> list[client.CoreV1Event]:
        """The Events of `reason` once there are `at_least`: the operator writes them beside the
        statuses a test waits for, not before them."""
        return wait_until(
            lambda: len(found := self.events(reason)) >= at_least and found,
            timeout=timeout,
            what=f"{at_least} {reason} Event(s)",
        )

    def wait_finished(self, name: str, timeout: float = 120) -> dict:
        return wait_until(
            lambda: (e := self.get(name)).get("status", {}).get("phase") in ("Succeeded", "Failed") and e,
            timeout=timeout,
            what=f"experiment {name} to finish",
        )

    def wait_trial(self, name: str, phases: tuple[str, ...], timeout: float = 60) -> dict:
        def done():
            try:
                t = self.get(name, "trials")
            except client.ApiException:
                return None
            return t.get("status", {}).get("phase") in phases and t

        return wait_until(done, timeout=timeout, what=f"trial {name} to reach {phases}")


class PodConcurrency:
    """Watches pods and records the most that were unfinished at once."""

    def __init__(self, api: client.ApiClient, namespace: str):
        self.core = client.CoreV1Api(api)
        self.namespace = namespace
        self.active: set[str] = set()
        self.most = 0
        self.watch = watch.Watch()
        self.thread = threading.Thread(target=self.run, daemon=True)
        self.thread.start()

    def run(self) -> None:
        try:
            for event in self.watch.stream(self.core.list_namespaced_pod, self.namespace, timeout_seconds=300):
                pod = event["object"]
                done = (
                    event["type"] == "DELETED"
                    or pod.status.phase in ("Succeeded", "Failed")
                    or pod.metadata.deletion_timestamp is not None
                )
                (self.active.discard if done else self.active.add)(pod.metadata.name)
                self.most = max(self.most, len(self.active))
        except Exception:  # the stream ends abruptly when stop() closes it
            pass

    def stop(self) -> int:
        self.watch.stop()
        return self.most


class TrialPhaseCounts:
    """Watches the namespace's Trials and records, for each phase, the most trials that were in it
    at once, and the phases each trial went through."""

    def __init__(self, api: client.ApiClient, namespace: str):
        self.custom = client.CustomObjectsApi(api)
        self.namespace = namespace
        self.phase: dict[str, str] = {}
        self.most: dict[str, int] = {}
        self.seen: dict[str, list[str]] = {}
        self.watch = watch.Watch()
        self.thread = threading.Thread(target=self.run, daemon=True)
        self.thread.start()

    def run(self) -> None:
        try:
            for event in self.watch.stream(
                self.custom.list_namespaced_custom_object, GROUP, VERSION, self.namespace, "trials", timeout_seconds=600
            ):
                trial = event["object"]
                name = trial["metadata"]["name"]
                if event["type"] == "DELETED":
                    self.phase.pop(name, None)
                    continue
                phase = (trial.get("status") or {}).get("phase") or "Pending"
                self.phase[name] = phase
                history = self.seen.setdefault(name, [])
                if not history or history[-1] != phase:
                    history.append(phase)
                counts: dict[str, int] = {}
                for p in self.phase.values():
                    counts[p] = counts.get(p, 0) + 1
                for p, n in counts.items():
                    self.most[p] = max(self.most.get(p, 0), n)
        except Exception:  # the stream ends abruptly when stop() closes it
            pass

    def stop(self) -> dict[str, int]:
        self.watch.stop()
        return self.most


def write_log(path: Path, lines: list[str]) -> None:
    """Writes lines in the container runtime's log format, which KWOK serves."""
    stamp = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f000Z")
    path.write_text("".join(f"{stamp} stdout F {line}\n" for line in lines))


def serve_log(api: client.ApiClient, namespace: str, pod: str, path: Path, container: str = "train") -> None:
    client.CustomObjectsApi(api).create_namespaced_custom_object(
        "kwok.x-k8s.io",
        "v1alpha1",
        namespace,
        "logs",
        {
            "apiVersion": "kwok.x-k8s.io/v1alpha1",
            "kind": "Logs",
            "metadata": {"name": pod},
            "spec": {"logs": [{"containers": [container], "logsFile": str(path), "follow": True}]},
        },
    )


class Volumes:
    """Static hostPath PersistentVolumes of one storage class, removed afterwards: the local cluster has
    no storage provisioner, and checkpoint claims (trialTemplate.checkpoint) bind to these (the PV
    controller of the local kube-controller-manager binds them)."""

    def __init__(self, api, storage_class: str, count: int):
        self.core, self.storage_class = client.CoreV1Api(api), storage_class
        self.root = Path(tempfile.mkdtemp(prefix="hpo-pv-"))
        self.root.chmod(0o755)
        self.names = []
        for i in range(count):
            path = self.root / str(i)
            path.mkdir()
            path.chmod(0o777)  # the trial image runs as nobody
            # Unique names: a PV of an earlier test may still be on its way out.
            name = f"{storage_class}-{uuid.uuid4().hex[:6]}-{i}"
            self.core.create_persistent_volume(
                {
                    "apiVersion": "v1",
                    "kind": "PersistentVolume",
                    "metadata": {"name": name, "labels": {"app.kubernetes.io/part-of": "hpo-operator-tests"}},
                    "spec": {
                        "capacity": {"storage": "1Gi"},
                        "accessModes": ["ReadWriteOnce"],
                        "storageClassName": storage_class,
                        "persistentVolumeReclaimPolicy": "Retain",
                        "hostPath": {"path": str(path), "type": "Directory"},
                    },
                }
            )
            self.names.append(name)

    def delete(self) -> None:
        for name in self.names:
            try:
                self.core.delete_persistent_volume(name)
            except client.ApiException:
                pass


def this_checkouts_crds(kubectl: Kubectl, *served: tuple[str, str]) -> None:
    """Applies this checkout's CRDs and waits until each (`kubectl explain` path, word) pair is
    served: on a cluster shared with other checkouts, one of them may have applied its own since this
    session began (the API server then drops, or refuses, what only this checkout's have)."""
    for name in ("experiments", "trials"):
        kubectl.run("apply", "--server-side", "--force-conflicts", "-f", str(REPO / "crds" / f"{name}.yaml"))
    wait_until(
        lambda: all(word in kubectl.run("explain", path, check=False).stdout for path, word in served),
        timeout=30,
        what="this checkout's CRDs to be served",
    )
