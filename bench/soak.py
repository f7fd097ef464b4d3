"""The fault soak (`make soak`): a large experiment while the control plane and the operator are broken
again and again, then the same exact checks as the fault tests.

On the local control plane (hack/cluster.sh), two operator replicas with leader election talk to a
second kube-apiserver on the same etcd (tests/support/faults.py), while KWOK runs the trial pods through the
main one. Every 8 to 20 seconds one fault, drawn at random (seeded):
- **api-server restart**: that kube-apiserver SIGKILLed, away for 2 to 10 s, started again;
- **operator SIGKILL**: the leading replica killed, started again a second later (as the kubelet
  restarts a container);
- **leader deletion**: the leading replica stopped with SIGTERM (a deleted pod: it releases the
  Lease), started again a second later.
The experiment (tests/support/outcome.py: a grid whose configurations fail a known number of times, so
every count is known in advance) must then end with exact counts, no duplicate suggestion and no
orphan pod. With `--experiments N`, N such experiments run at once (each its own grid), and every
one of them must. Prints the faults injected and what was checked, as tables; exits 1 if a check
failed.

    .venv/bin/python bench/soak.py                       # 2,000 configurations x 200 parallel
    .venv/bin/python bench/soak.py --seeds 50 --parallel 20   # a short one
    .venv/bin/python bench/soak.py --experiments 200 --seeds 2 --parallel 2   # 200 small ones

HPO_KUBECONFIG names the local cluster to use (else hack/cluster.sh starts it).
"""

from __future__ import annotations

import argparse
import os
import random
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "operator"))

from kubernetes import client, config  # noqa: E402

from hpo_operator.api.vocabulary import GROUP, L_EXPERIMENT, VERSION  # noqa: E402
from tests.support import faults  # noqa: E402
from tests.support.kube import OperatorProcess  # noqa: E402
from tests.support.outcome import Check, FaultyGrid  # noqa: E402

LEASE = "hpo-operator"


@dataclass
class Fault:
    at: float  # seconds since the experiment was created
    kind: str
    detail: str
    trials_before: int


class Soak:
    def __init__(self, kubeconfig: str, grid: FaultyGrid, logs: Path, rng: random.Random, experiments: int = 1):
        self.grid, self.logs, self.rng = grid, logs, rng
        # The experiments' names: "soak" alone, or soak-0 ... soak-(N-1).
        self.names = ["soak"] if experiments == 1 else [f"soak-{i}" for i in range(experiments)]
        api = config.new_client_from_config(config_file=kubeconfig)
        self.core, self.custom = client.CoreV1Api(api), client.CustomObjectsApi(api)
        self.leases = client.CoordinationV1Api(api)
        self.namespace = f"hpo-soak-{uuid.uuid4().hex[:6]}"
        self.server = faults.ApiServer(faults.local_cluster(kubeconfig), logs / "apiserver.log")
        self.replicas: dict[str, OperatorProcess] = {}
        self.faults: list[Fault] = []
        self.started = 0.0

    def setup(self) -> None:
        self.core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=self.namespace)))
        self.leases.create_namespaced_lease(
            self.namespace, client.V1Lease(metadata=client.V1ObjectMeta(name=LEASE), spec=client.V1LeaseSpec())
        )
        self.server.start()
        kc = self.server.write_kubeconfig(self.logs / "kubeconfig")
        for name in ("a", "b"):
            self.replicas[name] = OperatorProcess(
                str(kc),
                self.namespace,
                self.logs / f"operator-{name}.log",
                env={
                    "HPO_LEADER_ELECTION_LEASE": f"{self.namespace}/{LEASE}",
                    "POD_NAME": name,
                    "HPO_LEASE_DURATION_SECONDS": "6",
                    "HPO_LEASE_RENEW_DEADLINE_SECONDS": "4",
                    "HPO_LEASE_RETRY_PERIOD_SECONDS": "1",
                    "HPO_RECONCILE_INTERVAL": "5",
                },
            )
            self.replicas[name].start()
        # The pods of 200 trials at a time wait for the default ServiceAccount like any pod.
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                self.core.read_namespaced_service_account("default", self.namespace)
                break
            except client.ApiException:
                time.sleep(0.5)

    def holder(self) -> str | None:
        try:
            return self.leases.read_namespaced_lease(LEASE, self.namespace).spec.holder_identity
        except client.ApiException:
            return None

    def experiments(self) -> dict[str, dict]:
        items = self.custom.list_namespaced_custom_object(GROUP, VERSION, self.namespace, "experiments")["items"]
        return {e["metadata"]["name"]: e for e in items}

    def trial_count(self) -> int:
        return sum((e.get("status") or {}).get("trials") or 0 for e in self.experiments().values())

    def revive(self) -> None:
        """Any replica that exited (a leader that lost its Lease exits) is started again, as the
        kubelet restarts a container."""
        for op in self.replicas.values():
            if op.proc is not None and op.proc.poll() is not None:
                op.start()

    def inject(self) -> None:
        kind = self.rng.choice(["api-server restart", "operator SIGKILL", "leader deletion"])
        before = self.trial_count()
        at = time.monotonic() - self.started
        if kind == "api-server restart":
            away = self.rng.uniform(2, 10)
            self.server.kill()
            time.sleep(away)
            self.server.restart()
            detail = f"away {away:.1f} s"
        else:
            leader = self.holder()
            op = self.replicas.get(leader or "")
            if op is None or op.proc is None or op.proc.poll() is not None:
                kind, detail = "none", f"no live leader to {kind.split()[-1]} (Lease holder {leader})"
            elif kind == "operator SIGKILL":
                op.kill()
                time.sleep(1)
                op.start()
                detail = f"replica {leader}"
            else:
                op.stop()  # SIGTERM: kopf stops, the Lease is released
                time.sleep(1)
                op.start()
                detail = f"replica {leader}"
        self.faults.append(Fault(at, kind, detail, before))
        print(f"{at:7.1f} s  {kind:20s} {detail:28s} trials so far {before}", flush=True)

    def run(self, every: tuple[float, float], timeout: float) -> None:
        for name in self.names:
            self.custom.create_namespaced_custom_object(
                GROUP, VERSION, self.namespace, "experiments", self.grid.experiment(name)
            )
        self.started = time.monotonic()
        next_fault = self.started + self.rng.uniform(*every)
        while time.monotonic() - self.started < timeout:
            self.revive()
            phases = [(e.get("status") or {}).get("phase") for e in self.experiments().values()]
            if len(phases) == len(self.names) and all(p in ("Succeeded", "Failed") for p in phases):
                return
            if time.monotonic() >= next_fault:
                self.inject()
                next_fault = time.monotonic() + self.rng.uniform(*every)
            time.sleep(0.5 if len(self.names) == 1 else 2)
        raise SystemExit(f"the experiments did not finish within {timeout:.0f} s; logs in {self.logs}")

    def outcome(self) -> list[Check]:
        """The grid's checks, for each experiment (with several: each check over all of them, and
        which experiments failed it)."""
        # Finished trials may still be written a moment after the experiment's status: settle.
        time.sleep(3)
        trials = self.custom.list_namespaced_custom_object(GROUP, VERSION, self.namespace, "trials")["items"]
        pods = [
            client.ApiClient().sanitize_for_serialization(p)
            for p in self.core.list_namespaced_pod(self.namespace).items
        ]
        experiments = self.experiments()
        per_experiment = {}
        for name in self.names:
            mine = {t["metadata"]["name"]: t for t in trials if t["spec"].get("experimentName") == name}
            its_pods = {
                p["metadata"]["name"]: p for p in pods if (p["metadata"].get("labels") or {}).get(L_EXPERIMENT) == name
            }
            per_experiment[name] = self.grid.checks(experiments.get(name) or {}, mine, its_pods)
        if len(self.names) == 1:
            return per_experiment[self.names[0]]
        summary = []
        for i, first in enumerate(per_experiment[self.names[0]]):
            wrong = sorted(n for n, checks in per_experiment.items() if not checks[i].ok)
            seen = f"all {len(self.names)}" if not wrong else f"wrong in {len(wrong)}: {', '.join(wrong)}"
            summary.append(Check(first.what, f"all {len(self.names)}", seen))
        return summary

    def teardown(self, keep: bool) -> None:
        for op in self.replicas.values():
            op.stop()
        self.server.stop()
        if not keep:
            self.core.delete_namespace(self.namespace, propagation_policy="Background")


def table(rows: list[list[str]], header: list[str]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, default=500, help="configurations per fail count (4 counts)")
    parser.add_argument("--parallel", type=int, default=200)
    parser.add_argument("--every", default="8,20", help="seconds between faults, drawn between these")
    parser.add_argument("--seed", type=int, default=1, help="of the fault schedule")
    parser.add_argument("--timeout", type=float, default=3600)
    parser.add_argument("--logs", default=str(REPO / ".cluster" / "soak"))
    parser.add_argument("--keep", action="store_true", help="keep the namespace afterwards")
    parser.add_argument("--experiments", type=int, default=1, help="experiments at once, each its own grid")
    args = parser.parse_args()
    grid = FaultyGrid(seeds=args.seeds, parallel=args.parallel, duration="1s")
    logs = Path(args.logs)
    logs.mkdir(parents=True, exist_ok=True)
    kubeconfig = (
        os.environ.get("HPO_KUBECONFIG")
        or (
            subprocess.run([REPO / "hack" / "cluster.sh", "up"], capture_output=True, text=True, check=True)
            .stdout.strip()
            .splitlines()[-1]
        )
    )
    subprocess.run(
        [
            str(Path.home() / ".cache/hpo-operator/bin/kubectl"),
            "--kubeconfig",
            kubeconfig,
            "apply",
            "--server-side",
            "--force-conflicts",
            "-f",
            str(REPO / "crds"),
        ],
        check=True,
        capture_output=True,
    )
    soak = Soak(kubeconfig, grid, logs, random.Random(args.seed), args.experiments)
    every = tuple(float(x) for x in args.every.split(","))
    print(
        f"soak: {args.experiments} experiment(s) of {grid.configs} configurations ({grid.trials} trials) x "
        f"{grid.parallel} parallel in {soak.namespace}; logs in {logs}",
        flush=True,
    )
    try:
        soak.setup()
        soak.run(every, args.timeout)  # type: ignore[arg-type]
        took = time.monotonic() - soak.started
        checks = soak.outcome()
    finally:
        soak.teardown(args.keep)
    counts: dict[str, int] = {}
    for f in soak.faults:
        counts[f.kind] = counts.get(f.kind, 0) + 1
    print(f"\nFaults injected ({len(soak.faults)} in {took:.0f} s, schedule seed {args.seed}):\n")
    print(table([[k, str(n)] for k, n in sorted(counts.items())], ["fault", "count"]))
    print("\nChecked afterwards:\n")
    print(
        table(
            [
                [
                    c.what,
                    str(c.expected),
                    str(c.seen) if len(str(c.seen)) < 80 else str(c.seen)[:77] + "...",
                    "ok" if c.ok else "FAILED",
                ]
                for c in checks
            ],
            ["check", "expected", "seen", ""],
        )
    )
    starts = {name: op.starts for name, op in soak.replicas.items()}
    trials = grid.trials * args.experiments
    print(f"\nOperator starts: {starts}; finished after {took:.0f} s ({trials / took:.1f} trials/s)")
    if not all(c.ok for c in checks):
        sys.exit(1)


if __name__ == "__main__":
    main()
