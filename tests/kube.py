"""Helpers the tests share: kubectl, polling, and the operator as a subprocess."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any, Callable

import yaml

REPO = Path(__file__).resolve().parents[1]


def wait_until(predicate: Callable[[], Any], timeout: float = 60, interval: float = 0.3,
               what: str = "the condition") -> Any:
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
        proc = subprocess.run([self.binary, "--kubeconfig", self.kubeconfig, *args], input=input,
                              capture_output=True, text=True, timeout=120)
        if check and proc.returncode != 0:
            raise AssertionError(f"kubectl {' '.join(args)} failed:\n{proc.stderr}")
        return proc

    def apply(self, manifest: dict | str, namespace: str, check: bool = True) -> subprocess.CompletedProcess:
        text = manifest if isinstance(manifest, str) else yaml.safe_dump(manifest)
        return self.run("apply", "-n", namespace, "-f", "-", input=text, check=check)

    def get(self, kind: str, name: str, namespace: str) -> dict:
        return yaml.safe_load(self.run("get", kind, name, "-n", namespace, "-o", "yaml").stdout)


class OperatorProcess:
    """The operator as users run it (`python -m hpo_operator`), scoped to one namespace.

    `kubeconfig` is the identity it runs as (for example a ServiceAccount token's kubeconfig);
    `args` replace the default kopf options (`--namespace NAMESPACE --standalone`) and `env` adds to
    (or overrides) the environment.
    """

    def __init__(self, kubeconfig: str, namespace: str, log_path: Path, *,
                 args: list[str] | None = None, env: dict[str, str] | None = None):
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
        env = {**os.environ, "KUBECONFIG": self.kubeconfig, "PYTHONUNBUFFERED": "1",
               "HPO_RECONCILE_INTERVAL": "1", **self.env}
        log = open(self.log_path, "a")
        log.write(f"--- start {self.starts + 1}\n")
        log.flush()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "hpo_operator", *self.args],
            env=env, stdout=log, stderr=subprocess.STDOUT, cwd=REPO)
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
        return {line.rsplit(" ", 1)[0]: float(line.rsplit(" ", 1)[1])
                for line in text.splitlines() if line.startswith("hpo_")}

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
        before = wait_until(lambda: (n := self.rounds()) is not None and [n], timeout=timeout,
                            what="the operator's metrics")[0]

        def done() -> bool:
            n = self.rounds()
            if n is not None and n > before + rounds:
                return True
            wake()
            return False
        wait_until(done, timeout=timeout, what=f"{rounds} round(s) of the operator")

    def log(self) -> str:
        return self.log_path.read_text() if self.log_path.exists() else ""

    def failed_output(self) -> str:
        text = self.log()
        return text if "Traceback" in text else ""
