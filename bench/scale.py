"""The control loop at scale: the operator against the raw API floor, side by side, in one run.

For each case (E experiments x N trials x P parallel) it runs, on the same cluster and one after the
other:
- the **floor**: a minimal async client doing exactly the operator's API writes for each trial
  (create the Trial, patch its status, create its pod, and once the pod has finished patch the
  Trial's status and the Experiment's status), P trials of each experiment at a time, with at most
  --floor-writers writes in flight (the concurrency at which this cluster is fastest: more
  concurrent writers make the API server time out);
- the **operator** (`python -m hpo_operator --namespace <the case's>`, a fresh process per case) on an
  Experiment with the same budgets.

Trial pods run on the KWOK nodes and finish at once (`sim.hpo.dev/duration: 0s`), so the loop, not
the training, is what is measured. With `--kind job` every trial is a batch/v1 Job of that pod, run
by the cluster's job controller, and a trial has finished when its Job is Complete: both sides
create the Job the operator builds (workload.build_workload) instead of the pod. With `--kind
trainjob` (`make cluster-training`) every trial is a Kubeflow TrainJob of one node on a torch-style
ClusterTrainingRuntime made for the run, run by Trainer and JobSet, finished when Complete; both
sides read the runtime and create the TrainJob the operator builds. Every time is a receipt time of this
script's own watch on pods
and experiments. Prints a table; asserts nothing (bench/README.md explains each column).

    .venv/bin/python bench/scale.py                  # every case (about 45 minutes on 2 cores)
    .venv/bin/python bench/scale.py --cases 200x20,unrelated
    .venv/bin/python bench/scale.py --cases 1000x200 --kind job
    .venv/bin/python bench/scale.py --cases 200x20 --kind trainjob
    .venv/bin/python bench/scale.py --cases 200x20 --tenancy

With `--tenancy` each case also runs the operator as the chart's tenancy runs it (docs/tenancy.md):
its admission webhook records the experiments' author (a user this script impersonates,
allowed to create them and pods), each trial's workload is created after a LocalSubjectAccessReview
of that author, and as the namespace's trial ServiceAccount; the same operator without it runs
beside it, against the same floor.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import yaml
from kubernetes_asyncio import client, config

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "operator"))

from hpo_operator.api.spec import ExperimentSpec  # noqa: E402
from hpo_operator.kube.client import KubeClient, read_body  # noqa: E402
from hpo_operator.workloads.kinds import (  # noqa: E402
    build_workload,
    runtime_replicated_jobs,
    trainjob_runtime,
)
from tests.support.chart import Helm, Webhook, host_objects  # noqa: E402
from tests.support.experiments import GROUP, VERSION, experiment, loss_is_x, sim_pod, x_space  # noqa: E402
from tests.support.training import TRAINER, torch_runtime_body  # noqa: E402

# name: (experiments, trials per experiment, parallel trials per experiment)
CASES = {
    "200x20": (1, 200, 20),
    "1000x200": (1, 1000, 200),
    "2000x1000": (1, 2000, 1000),
    "10000x200": (1, 10000, 200),
    "100x(20x10)": (100, 20, 10),
    "1000x(4x2)": (1000, 4, 2),
}
# `burst`: BURST_SMALL experiments alone, then the same beside one experiment of BURST trials, all
# of them in parallel, created just before them: the small ones' times with and without it.
BURST_SMALL = (50, 10, 2)
BURST = (1000, 1000)
UNRELATED_PODS = 2000
RUNTIME = "hpo-bench-torch"  # the ClusterTrainingRuntime of --kind trainjob
KINDS = {"job": ("batch", "v1", "jobs"), "trainjob": (*TRAINER, "trainjobs")}  # what a finished trial is


def experiment_body(name: str, trials: int, parallel: int, kind: str = "pod") -> dict:
    pod = sim_pod(loss_is_x("0s"))
    # A Job trial: the same pod as the Job's template, run by the cluster's job controller. A
    # TrainJob trial: one node of the runtime's pod, the same annotations through a runtime patch.
    if kind == "trainjob":
        node = {"name": "node", "template": {"spec": {"template": {"metadata": pod["metadata"]}}}}
        template = {
            "resource": {
                "apiVersion": "/".join(TRAINER),
                "kind": "TrainJob",
                "manifest": {
                    "spec": {
                        "runtimeRef": {"name": RUNTIME},
                        "trainer": {"numNodes": 1},
                        "runtimePatches": [
                            {
                                "manager": "example.org/bench",
                                "trainingRuntimeSpec": {"template": {"spec": {"replicatedJobs": [node]}}},
                            }
                        ],
                    }
                },
            }
        }
    else:
        template = {"template": pod} if kind == "pod" else {"job": {"spec": {"template": pod}}}
    return experiment(
        name,
        x_space(),
        max_trials=trials,
        parallel=parallel,
        metricsCollector={"source": "TerminationMessage"},
        trialTemplate=template,
    )


# --- a raw watch: receipt times of what the cluster says ------------------------------------


async def watch_lines(list_fn, *args, on_event, stop: asyncio.Event, **kwargs) -> None:
    """Calls on_event(type, object) for each watch event until `stop` is set (re-watching on
    expiry). Raw JSON lines: no model objects, so this script stays light next to the cluster."""
    while not stop.is_set():
        try:
            await watch_once(list_fn, *args, on_event=on_event, stop=stop, **kwargs)
        except (TimeoutError, client.ApiException, aiohttp.ClientError, OSError, ValueError) as e:
            # An API server under load answers 429 or cuts the stream: list and watch again.
            print(f"  (the benchmark's watch: {type(e).__name__} {getattr(e, 'status', '')}; again)", file=sys.stderr)
            await asyncio.sleep(1)


async def watch_once(list_fn, *args, on_event, stop: asyncio.Event, **kwargs) -> None:
    """One listing, then one watch from its resourceVersion until it ends (or `stop`)."""
    data = json.loads(await read_body(await list_fn(*args, _preload_content=False, **kwargs)))
    for obj in data["items"]:
        on_event("ADDED", obj)
    resp = await list_fn(
        *args,
        watch=True,
        resource_version=data["metadata"]["resourceVersion"],
        allow_watch_bookmarks=True,
        timeout_seconds=600,
        _preload_content=False,
        _request_timeout=660,
    )
    if not 200 <= resp.status <= 299:
        await read_body(resp)  # raises
    try:
        async for line in resp.content:
            if not line.strip():
                continue
            event = json.loads(line)
            if event["type"] == "ERROR":
                break
            if event["type"] != "BOOKMARK":
                on_event(event["type"], event["object"])
            if stop.is_set():
                break
    finally:
        resp.release()


@dataclass
class Clock:
    """When each pod was first seen, and first seen finished; per experiment."""

    created: dict[str, float] = field(default_factory=dict)
    finished: dict[str, float] = field(default_factory=dict)
    experiment_of: dict[str, str] = field(default_factory=dict)
    waiters: dict[str, asyncio.Future] = field(default_factory=dict)
    job_waiters: dict[str, asyncio.Future] = field(default_factory=dict)

    def on_pod(self, type_: str, pod: dict) -> None:
        now = time.monotonic()
        labels = pod["metadata"].get("labels") or {}
        name = labels.get("hpo.dev/trial") or pod["metadata"]["name"]  # a Job's pod: its trial's name
        self.created.setdefault(name, now)
        self.experiment_of[name] = labels.get("hpo.dev/experiment", "")
        if (pod.get("status") or {}).get("phase") in ("Succeeded", "Failed") and name not in self.finished:
            self.finished[name] = now
            waiter = self.waiters.pop(name, None)
            if waiter and not waiter.done():
                waiter.set_result(pod)

    def on_job(self, type_: str, job: dict) -> None:
        """A Job (or TrainJob) trial is finished when its controller says so (the operator waits for
        that too)."""
        done = {c.get("type") for c in (job.get("status") or {}).get("conditions") or [] if c.get("status") == "True"}
        waiter = self.job_waiters.get(job["metadata"]["name"])
        if done & {"Complete", "Failed"} and waiter and not waiter.done():
            waiter.set_result(job)

    def wait_job(self, name: str) -> asyncio.Future:
        future = self.job_waiters[name] = asyncio.get_running_loop().create_future()
        return future

    def wait_finished(self, name: str) -> asyncio.Future:
        future = asyncio.get_running_loop().create_future()
        if name in self.finished:
            future.set_result(None)
        else:
            self.waiters[name] = future
        return future

    def first_pods(self) -> dict[str, float]:
        """Per experiment, when its first pod was seen."""
        first: dict[str, float] = {}
        for name, exp in self.experiment_of.items():
            first[exp] = min(first.get(exp, float("inf")), self.created[name])
        return first

    def replacement_latencies(self, parallel: int, only: set[str] | None = None) -> dict[str, list[float]]:
        """Per experiment: pod k+P is the replacement of the k-th pod to finish."""
        result = {}
        for exp in set(self.experiment_of.values()) if only is None else only:
            names = [n for n, e in self.experiment_of.items() if e == exp]
            created = sorted(self.created[n] for n in names)
            finished = sorted(self.finished[n] for n in names if n in self.finished)
            result[exp] = [c - f for c, f in zip(created[parallel:], finished, strict=False)]
        return result


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    values = sorted(values)
    return values[min(len(values) - 1, int(round(q * (len(values) - 1))))]


# --- the cluster ------------------------------------------------------------------------------


class Cluster:
    def __init__(self, api: client.ApiClient):
        self.api = api
        self.core = client.CoreV1Api(api)
        self.custom = client.CustomObjectsApi(api)

    async def raw(self, fn, *args, **kwargs) -> dict:
        return json.loads(await read_body(await fn(*args, _preload_content=False, **kwargs)))

    async def namespace(self, prefix: str) -> str:
        name = f"{prefix}-{uuid.uuid4().hex[:6]}"
        await self.core.create_namespace({"metadata": {"name": name, "labels": {"hpo.dev/bench": "scale"}}})
        for _ in range(300):  # pods are refused until the default ServiceAccount exists
            try:
                await self.core.read_namespaced_service_account("default", name)
                return name
            except client.ApiException:
                await asyncio.sleep(0.1)
        raise RuntimeError(f"namespace {name} got no default ServiceAccount")

    async def torch_runtime(self) -> None:
        """The ClusterTrainingRuntime of --kind trainjob: one replicated job `node` whose pod runs on
        the KWOK nodes (its annotations come from each TrainJob's runtime patch)."""
        node = {"spec": {"restartPolicy": "Never", "containers": [{"name": "node", "image": "trainer:1"}]}}
        body = torch_runtime_body(RUNTIME, node)
        try:
            await self.custom.create_cluster_custom_object(*TRAINER, "clustertrainingruntimes", body)
        except client.ApiException as e:
            if e.status == 404:
                raise SystemExit("--kind trainjob needs Kubeflow Trainer: run `make cluster-training`") from e
            if e.status != 409:
                raise

    async def delete_namespace(self, name: str, wait: float = 600) -> float:
        start = time.monotonic()
        await self.core.delete_namespace(name, propagation_policy="Background")
        while time.monotonic() - start < wait:
            try:
                await self.core.read_namespace(name)
            except client.ApiException as e:
                if e.status == 404:
                    break
            await asyncio.sleep(1)
        return time.monotonic() - start


# --- one run: the floor or the operator -----------------------------------------------------


@dataclass
class Result:
    who: str
    case: str
    trials: int
    parallel: int
    wall: float
    latencies: dict[str, list[float]]
    first_pods: float
    cpu: float | None = None
    rss_mb: float | None = None
    exp_kb: float | None = None
    # Per experiment, from its creation (the create's answer): its first pod seen, and its end.
    first_pod_delays: list[float] = field(default_factory=list)
    finish_delays: list[float] = field(default_factory=list)
    clock: Clock | None = None
    start: float = 0.0

    @property
    def rate(self) -> float:
        return self.trials / self.wall


async def run_floor(
    cluster: Cluster, case: str, experiments: int, trials: int, parallel: int, writers: int, kind: str = "pod"
) -> Result:
    ns = await cluster.namespace("bench-floor")
    clock, stop = Clock(), asyncio.Event()
    watchers = [
        asyncio.create_task(watch_lines(cluster.core.list_namespaced_pod, ns, on_event=clock.on_pod, stop=stop))
    ]
    if kind in KINDS:
        watchers.append(
            asyncio.create_task(
                watch_lines(
                    cluster.custom.list_namespaced_custom_object,
                    *KINDS[kind][:2],
                    ns,
                    KINDS[kind][2],
                    on_event=clock.on_job,
                    stop=stop,
                )
            )
        )
    # The operator's own API layer, its bound set to the floor's best concurrency.
    api = KubeClient(cluster.api, concurrency=writers)
    start = time.monotonic()
    created: dict[str, float] = {}
    ended: dict[str, float] = {}

    async def one_experiment(e: int) -> None:
        name = f"exp{e}"
        body = experiment_body(name, trials, parallel, kind)
        spec = ExperimentSpec.model_validate(body["spec"])
        exp = await api.create("experiments", ns, body)
        created[name] = time.monotonic()
        owner = {
            "apiVersion": f"{GROUP}/{VERSION}",
            "kind": "Experiment",
            "name": name,
            "uid": exp["metadata"]["uid"],
            "controller": True,
            "blockOwnerDeletion": True,
        }
        queue = iter(range(trials))
        done = 0

        async def worker() -> None:
            nonlocal done
            for i in queue:
                trial = f"{name}-{i:04d}"
                x = str((i * 0.618) % 1)
                created = await api.create(
                    "trials",
                    ns,
                    {
                        "apiVersion": f"{GROUP}/{VERSION}",
                        "kind": "Trial",
                        "metadata": {
                            "name": trial,
                            "labels": {"hpo.dev/experiment": name, "hpo.dev/trial": trial},
                            "ownerReferences": [owner],
                        },
                        "spec": {
                            "experimentName": name,
                            "attempt": 1,
                            "suggestionIndex": i,
                            "parameters": [{"name": "x", "value": x}],
                        },
                    },
                )
                await api.patch_status(
                    "trials", ns, trial, {"phase": "Pending", "reason": "PodCreated", "parameterSummary": f"x={x}"}
                )
                finished = clock.wait_finished(trial) if kind == "pod" else clock.wait_job(trial)
                replicated_jobs = None
                runtime = trainjob_runtime(spec, ns)
                if runtime is not None:  # as the operator does: the runtime's jobs get the labels
                    rkind, rns, rname = runtime
                    found = await api.get_custom((rkind.group, rkind.version, rkind.plural or ""), rns, rname)
                    replicated_jobs = runtime_replicated_jobs(found)
                workload, manifest = build_workload(spec, name, created, replicated_jobs)
                resource = KINDS.get(kind) or (workload.group, workload.version, workload.plural or "")
                await api.create_object(resource, ns, manifest)
                await finished
                await api.patch_status(
                    "trials", ns, trial, {"phase": "Succeeded", "reason": "Completed", "objectiveValue": float(x)}
                )
                done += 1
                await api.patch_status("experiments", ns, name, {"trialsSucceeded": done})

        await asyncio.gather(*(worker() for _ in range(parallel)))
        ended[name] = time.monotonic()

    await asyncio.gather(*(one_experiment(e) for e in range(experiments)))
    wall = time.monotonic() - start
    stop.set()
    for w in watchers:
        w.cancel()
    first = sorted(clock.created.values())
    first_pod = clock.first_pods()
    result = Result(
        "floor",
        case,
        trials * experiments,
        parallel,
        wall,
        clock.replacement_latencies(parallel),
        first[min(len(first), parallel) - 1] - start,
        first_pod_delays=[first_pod.get(n, float("inf")) - t for n, t in created.items()],
        finish_delays=[ended[n] - t for n, t in created.items()],
        clock=clock,
        start=start,
    )
    await cluster.delete_namespace(ns)
    return result


def proc_cpu(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def proc_rss_mb(pid: int, key: str = "VmHWM") -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1]) / 1024
    return float("nan")


class Operator:
    """The operator as users run it, in a fresh process, watching the case's namespace only: on a
    shared cluster, other sessions' experiments are theirs (with --all-namespaces it would run
    them too, beside their own operators). Its metrics on a port of its own."""

    def __init__(self, kubeconfig: str, namespace: str, log: Path, env: dict[str, str] | None = None):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.metrics_port = s.getsockname()[1]
        env = {
            **os.environ,
            "KUBECONFIG": kubeconfig,
            "PYTHONUNBUFFERED": "1",
            "HPO_METRICS_PORT": str(self.metrics_port),
            **(env or {}),
        }
        self.log = open(log, "w")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "hpo_operator", "--namespace", namespace, "--standalone"],
            env=env,
            stdout=self.log,
            stderr=subprocess.STDOUT,
            cwd=REPO,
        )

    def cpu(self) -> float:
        return proc_cpu(self.proc.pid)

    def requests(self) -> dict[str, float]:
        """Its API requests so far by verb (hpo_api_requests_total), its Experiment status writes
        by when (hpo_experiment_status_writes_total: "status changed", "status turn"), and its
        rounds ("rounds success", "rounds error")."""
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=5) as r:
                text = r.read().decode()
        except OSError:
            return {}
        found = {}
        for line in text.splitlines():
            for metric, prefix in (
                ("hpo_api_requests_total", ""),
                ("hpo_experiment_status_writes_total", "status "),
                ("hpo_reconcile_total", "rounds "),
            ):
                if line.startswith(metric + "{"):
                    label = line.split('"')[1]
                    found[prefix + label] = float(line.rsplit(" ", 1)[1])
        return found

    def rss(self, key: str = "VmHWM") -> float:
        return proc_rss_mb(self.proc.pid, key)

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.log.close()


class Tenancy:
    """The chart's tenancy for one namespace, for an operator run here: the trial account and its
    RBAC, the webhook's configuration calling this host, and a tenant (an impersonated user) allowed
    to create Experiments and pods there. Its cluster-scoped objects go in teardown()."""

    TENANT = "bench-tenant"

    def __init__(self, cluster: Cluster, kubeconfig: str, logdir: Path):
        self.cluster, self.kubeconfig, self.logdir = cluster, kubeconfig, logdir
        bin_dir = Path(os.environ.get("HPO_CACHE", Path.home() / ".cache/hpo-operator")) / "bin"
        self.helm = Helm(str(bin_dir / "helm"), logdir / "helm-home")
        self.kubectl = str(bin_dir / "kubectl")
        self.made: list[tuple[str, str]] = []

    def apply(self, docs: list[dict], namespace: str) -> None:
        text = yaml.safe_dump_all(docs)
        subprocess.run(
            [self.kubectl, "--kubeconfig", self.kubeconfig, "apply", "-n", namespace, "-f", "-"],
            input=text,
            text=True,
            check=True,
            capture_output=True,
        )

    async def setup(self, namespace: str) -> tuple[dict[str, str], str]:
        review = await self.cluster.raw(
            client.AuthenticationV1Api(self.cluster.api).create_self_subject_review,
            {"apiVersion": "authentication.k8s.io/v1", "kind": "SelfSubjectReview"},
        )
        operator_user = review["status"]["userInfo"]["username"]
        webhook = Webhook.make(self.logdir / "webhook")
        docs = host_objects(self.helm, "bench", namespace, operator_user, webhook)
        tenant = [
            {
                "apiVersion": "rbac.authorization.k8s.io/v1",
                "kind": "Role",
                "metadata": {"name": "bench-tenant"},
                "rules": [{"apiGroups": [GROUP], "resources": ["experiments"], "verbs": ["create", "get"]}],
            },
            {
                "apiVersion": "rbac.authorization.k8s.io/v1",
                "kind": "RoleBinding",
                "metadata": {"name": "bench-tenant"},
                "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "bench-tenant"},
                "subjects": [{"kind": "User", "name": self.TENANT}],
            },
            {
                "apiVersion": "rbac.authorization.k8s.io/v1",
                "kind": "RoleBinding",
                "metadata": {"name": "bench-tenant-edit"},
                "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "edit"},
                "subjects": [{"kind": "User", "name": self.TENANT}],
            },
        ]
        self.apply(docs + tenant, namespace)
        self.made = [(d["kind"], d["metadata"]["name"]) for d in docs if "namespace" not in d["metadata"]]
        env = {**webhook.env(operator_user), "HPO_TRIAL_SERVICE_ACCOUNT": "hpo-trial-runner"}
        return env, self.TENANT

    async def teardown(self) -> None:
        for kind, name in self.made:
            subprocess.run(
                [self.kubectl, "--kubeconfig", self.kubeconfig, "delete", kind, name, "--ignore-not-found"],
                check=False,
                capture_output=True,
            )
        self.made = []


async def run_operator(
    cluster: Cluster,
    kubeconfig: str,
    case: str,
    experiments: int,
    trials: int,
    parallel: int,
    logdir: Path,
    timeout: float,
    kind: str = "pod",
    tenancy: Tenancy | None = None,
    burst: tuple[int, int] | None = None,
    profile: str | None = None,
) -> Result:
    """The operator on `experiments` experiments exp0... of `trials` x `parallel`; with `burst`
    (trials, parallel), an experiment `burst` of that size created just before them, which the
    results leave out (the run ends when the others have). `profile`: py-spy's output file, which
    records the operator meanwhile."""
    ns = await cluster.namespace("bench-op")
    env, author = {}, None
    if tenancy is not None:
        env, author = await tenancy.setup(ns)
    operator = Operator(kubeconfig, ns, logdir / f"operator-{case}{'-tenancy' if tenancy else ''}.log", env)
    await asyncio.sleep(5)  # started, lists done, idle
    clock, stop = Clock(), asyncio.Event()
    finished: dict[str, float] = {}
    all_done = asyncio.Event()

    def on_experiment(type_: str, obj: dict) -> None:
        name = obj["metadata"]["name"]
        if (obj.get("status") or {}).get("phase") in ("Succeeded", "Failed") and name != "burst":
            finished.setdefault(name, time.monotonic())
            if len(finished) == experiments:
                all_done.set()

    watchers = [
        asyncio.create_task(watch_lines(cluster.core.list_namespaced_pod, ns, on_event=clock.on_pod, stop=stop)),
        asyncio.create_task(
            watch_lines(
                cluster.custom.list_namespaced_custom_object,
                GROUP,
                VERSION,
                ns,
                "experiments",
                on_event=on_experiment,
                stop=stop,
            )
        ),
    ]
    cpu0 = operator.cpu()
    recorder = None
    if profile:
        recorder = subprocess.Popen(
            [
                str(Path(sys.executable).parent / "py-spy"),
                "record",
                "--format",
                "raw",
                "--gil",  # the thread that holds the GIL: the operator's CPU, not its waits
                "--rate",
                "50",
                "-o",
                profile,
                "--pid",
                str(operator.proc.pid),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.STDOUT,
        )
    start = time.monotonic()
    sem = asyncio.Semaphore(20)
    created: dict[str, float] = {}

    async def create(name: str, n: int, p: int) -> None:
        async with sem:
            await cluster.raw(
                cluster.custom.create_namespaced_custom_object,
                GROUP,
                VERSION,
                ns,
                "experiments",
                experiment_body(name, n, p, kind),
                # With tenancy, written by a tenant, whom the webhook records as the author.
                **({"_headers": {"Impersonate-User": author}} if author else {}),
            )
            created[name] = time.monotonic()

    if burst is not None:
        await create("burst", *burst)
    await asyncio.gather(*(create(f"exp{e}", trials, parallel) for e in range(experiments)))
    try:
        await asyncio.wait_for(all_done.wait(), timeout)
    except TimeoutError:
        print(
            f"  {case}: only {len(finished)} of {experiments} experiments finished in {timeout:.0f}s", file=sys.stderr
        )
    wall = (max(finished.values()) if finished else time.monotonic()) - start
    cpu = operator.cpu() - cpu0
    rss = operator.rss()
    n = trials * experiments
    print(
        f"{case}: per trial, the operator's API requests and rounds: "
        + ", ".join(f"{verb} {count / n:.2f}" for verb, count in sorted(operator.requests().items())),
        flush=True,
    )
    if recorder is not None:
        recorder.send_signal(signal.SIGINT)  # py-spy writes its profile and exits
        recorder.wait(timeout=120)
        print(f"\n{case}: the operator's profile ({profile}), the functions with the most samples:")
        print(profile_top(Path(profile)))
    exp = await cluster.raw(cluster.custom.get_namespaced_custom_object, GROUP, VERSION, ns, "experiments", "exp0")
    stop.set()
    for w in watchers:
        w.cancel()
    operator.stop()
    phases = {exp["status"].get("phase")}
    if exp["status"].get("trialsSucceeded") != trials:
        print(
            f"  {case}: exp0 ended {phases} with {exp['status'].get('trialsSucceeded')} of {trials} trials succeeded",
            file=sys.stderr,
        )
    ours = {n for n in created if n != "burst"}
    first = sorted(t for n, t in clock.created.items() if clock.experiment_of.get(n) in ours)
    first_pod = clock.first_pods()
    result = Result(
        ("operator+tenancy" if tenancy else "operator") + ("+burst" if burst else ""),
        case,
        trials * experiments,
        parallel,
        wall,
        clock.replacement_latencies(parallel, ours),
        first[min(len(first), parallel) - 1] - start if first else float("nan"),
        cpu=cpu,
        rss_mb=rss,
        exp_kb=len(json.dumps(exp)) / 1024,
        first_pod_delays=[first_pod.get(n, float("inf")) - created[n] for n in ours],
        finish_delays=[finished.get(n, float("inf")) - created[n] for n in ours],
        clock=clock,
        start=start,
    )
    if tenancy is not None:
        if exp["metadata"].get("annotations", {}).get("hpo.dev/creator") != author:
            print(f"  {case}: exp0's author is not {author}: the webhook did not record it", file=sys.stderr)
        await tenancy.teardown()
    await cluster.delete_namespace(ns)
    return result


async def run_unrelated(cluster: Cluster, kubeconfig: str, logdir: Path) -> dict:
    """The operator idle while UNRELATED_PODS pods it does not own come and go elsewhere."""
    ns = await cluster.namespace("bench-unrelated")
    operator = Operator(kubeconfig, ns, logdir / "operator-unrelated.log")
    await asyncio.sleep(8)
    idle_rss = operator.rss("VmRSS")
    cpu0 = operator.cpu()
    start = time.monotonic()
    sem = asyncio.Semaphore(32)

    async def pod(i: int, delete: bool) -> None:
        async with sem:
            if delete:
                await cluster.raw(cluster.core.delete_namespaced_pod, f"other-{i}", ns)
            else:
                await cluster.raw(
                    cluster.core.create_namespaced_pod,
                    ns,
                    {
                        "metadata": {
                            "name": f"other-{i}",
                            "labels": {"app": "unrelated"},
                            "annotations": {"sim.hpo.dev/duration": "10s"},
                        },
                        "spec": {"containers": [{"name": "c", "image": "busybox"}], "restartPolicy": "Never"},
                    },
                )

    await asyncio.gather(*(pod(i, False) for i in range(UNRELATED_PODS)))
    await asyncio.sleep(15)  # running, then finished
    await asyncio.gather(*(pod(i, True) for i in range(UNRELATED_PODS)))
    while (
        len((await cluster.raw(cluster.core.list_namespaced_pod, ns, limit=1))["items"])
        and time.monotonic() - start < 300
    ):
        await asyncio.sleep(1)
    window = time.monotonic() - start
    result = {"window": window, "cpu": operator.cpu() - cpu0, "idle_rss": idle_rss, "peak_rss": operator.rss()}
    operator.stop()
    await cluster.delete_namespace(ns)
    return result


# Where a thread waits (py-spy does not always tell them from work): an idle thread pool worker,
# the event loop waiting for I/O.
IDLE = {"_worker (concurrent/futures/thread.py)", "EpollSelector.select (selectors.py)"}


def profile_top(path: Path, n: int = 25) -> str:
    """The functions of a collapsed-stack profile (py-spy's raw format: one stack a line, frames
    separated by ";", then the sample count) with the most samples: where the operator's time went
    (self: in the function itself; total: with what it called)."""
    own: dict[str, int] = {}
    total: dict[str, int] = {}
    samples = 0
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        frames = stack.split(";")
        # "function (file:line)": the line is dropped, so a function is counted once per stack.
        names = [f.split(":")[0] + ")" if " (" in f else f for f in frames]
        if names[-1] in IDLE:
            continue
        k = int(count)
        samples += k
        own[names[-1]] = own.get(names[-1], 0) + k
        for name in set(names):
            total[name] = total.get(name, 0) + k
    if not samples:
        return "(no samples)"
    lines = [f"{samples} samples; self %, total %, function"]
    for name, k in sorted(own.items(), key=lambda x: -x[1])[:n]:
        lines.append(f"{100 * k / samples:5.1f} {100 * total[name] / samples:5.1f}  {name}")
    return "\n".join(lines)


# --- the table --------------------------------------------------------------------------------


def row(r: Result, floor: Result | None) -> list[str]:
    lat = [x for values in r.latencies.values() for x in values]
    per_exp_p99 = [pct(v, 0.99) for v in r.latencies.values() if v]
    f = lambda v, fmt: "—" if v is None else format(v, fmt)  # noqa: E731
    return [
        r.case,
        r.who,
        f"{r.wall:.1f}",
        f"{r.rate:.1f}",
        f(r.wall / floor.wall if floor and r is not floor else None, ".2f"),
        f"{pct(lat, 0.5):.2f}",
        f"{pct(lat, 0.99):.2f}",
        f"{max(per_exp_p99, default=float('nan')):.2f}",
        f"{r.first_pods:.2f}",
        f(r.cpu * 1000 / r.trials if r.cpu is not None else None, ".1f"),
        f(r.rss_mb, ".0f"),
        f(r.exp_kb, ".1f"),
    ]


HEADER = [
    "case (E×N×P)",
    "who",
    "wall s",
    "trials/s",
    "÷ floor",
    "repl p50 s",
    "repl p99 s",
    "worst exp p99 s",
    "first P pods s",
    "op CPU ms/trial",
    "peak RSS MB",
    "Experiment KB",
]


def print_table(rows: list[list[str]], header: list[str] = HEADER) -> None:
    widths = [max(len(x) for x in col) for col in zip(header, *rows, strict=True)]
    print("| " + " | ".join(h.ljust(w) for h, w in zip(header, widths, strict=True)) + " |")
    print("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    for r in rows:
        print("| " + " | ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) + " |")
    sys.stdout.flush()


# The second table, for cases of several experiments: each experiment's own times.
PER_EXPERIMENT = [
    "case (E×N×P)",
    "who",
    "first pod p50 s",
    "first pod p99 s",
    "first pod max s",
    "waited > 30 s",
    "done p50 s",
    "done max s",
]


def experiment_row(r: Result) -> list[str]:
    first, done = r.first_pod_delays, r.finish_delays
    return [
        r.case,
        r.who,
        f"{pct(first, 0.5):.2f}",
        f"{pct(first, 0.99):.2f}",
        f"{max(first, default=float('nan')):.2f}",
        str(sum(1 for x in first if x > 30)),
        f"{pct(done, 0.5):.1f}",
        f"{max(done, default=float('nan')):.1f}",
    ]


def kubeconfig_path() -> str:
    given = os.environ.get("HPO_KUBECONFIG")
    if given:
        return given
    out = subprocess.run([REPO / "hack" / "cluster.sh", "up"], capture_output=True, text=True, check=True)
    return out.stdout.strip().splitlines()[-1]


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--cases",
        default=",".join([*CASES, "burst", "unrelated"]),
        help=f"comma-separated, from {', '.join(CASES)}, burst, unrelated",
    )
    parser.add_argument("--floor-writers", type=int, default=24, help="writes in flight for the floor")
    parser.add_argument("--no-floor", action="store_true", help="the operator alone")
    parser.add_argument("--no-operator", action="store_true", help="the floor alone")
    parser.add_argument(
        "--kind",
        choices=("pod", "job", "trainjob"),
        default="pod",
        help="what trials run as: pods, batch/v1 Jobs run by the job controller, or TrainJobs run by Trainer",
    )
    parser.add_argument(
        "--tenancy",
        action="store_true",
        help="also run the operator with the chart's tenancy (author checks, impersonation), beside it without",
    )
    parser.add_argument("--timeout", type=float, default=1800, help="per operator run, seconds")
    parser.add_argument(
        "--dump", metavar="DIR", help="write the times of each run's pods (created, finished) to DIR/<case>-<who>.json"
    )
    parser.add_argument(
        "--profile",
        metavar="DIR",
        help="record each operator run with py-spy (pip install py-spy) into DIR/<case>.txt (collapsed stacks, "
        "as flamegraph tools read them) and print its top functions",
    )
    parser.add_argument("--logs", default=str(REPO / ".cluster" / "bench"), help="operator logs go here")
    args = parser.parse_args()
    kubeconfig = kubeconfig_path()
    subprocess.run(
        [
            os.environ.get(
                "KUBECTL", str(Path(os.environ.get("HPO_CACHE", Path.home() / ".cache/hpo-operator")) / "bin/kubectl")
            ),
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
    logdir = Path(args.logs)
    logdir.mkdir(parents=True, exist_ok=True)
    await config.load_kube_config(config_file=kubeconfig)
    cfg = client.Configuration.get_default_copy()
    cfg.connection_pool_maxsize = 256
    rows: list[list[str]] = []
    async with client.ApiClient(cfg) as api:
        cluster = Cluster(api)
        if args.kind == "trainjob":
            await cluster.torch_runtime()
        try:
            await run_cases(cluster, args, kubeconfig, logdir, rows)
        finally:
            if args.kind == "trainjob":
                await cluster.custom.delete_cluster_custom_object(*TRAINER, "clustertrainingruntimes", RUNTIME)


async def run_cases(cluster: Cluster, args: argparse.Namespace, kubeconfig: str, logdir: Path, rows: list) -> None:
    """Every case of --cases, its tables printed after each."""
    per_experiment: list[list[str]] = []

    def profile(label: str) -> str | None:
        if not args.profile:
            return None
        Path(args.profile).mkdir(parents=True, exist_ok=True)
        return str(Path(args.profile) / f"{label.replace(' ', '_')}.txt")

    def show(result: Result, floor: Result | None) -> None:
        if args.dump and result.clock is not None:
            Path(args.dump).mkdir(parents=True, exist_ok=True)
            c = result.clock
            times = {
                n: [c.experiment_of.get(n), c.created[n] - result.start, c.finished.get(n, result.start) - result.start]
                for n in c.created
            }
            (Path(args.dump) / f"{result.case}-{result.who}.json").write_text(json.dumps(times))
        rows.append(row(result, floor))
        if len(result.first_pod_delays) > 1:
            per_experiment.append(experiment_row(result))
        print_table(rows)
        if per_experiment:
            print()
            print_table(per_experiment, PER_EXPERIMENT)
        print()

    async def operator(
        label: str,
        experiments: int,
        trials: int,
        parallel: int,
        burst: tuple[int, int] | None = None,
        tenancy: Tenancy | None = None,
    ) -> Result:
        """The operator's run of a case; profiled when asked (without tenancy)."""
        return await run_operator(
            cluster,
            kubeconfig,
            label,
            experiments,
            trials,
            parallel,
            logdir,
            args.timeout,
            args.kind,
            tenancy,
            burst=burst,
            profile=profile(f"{label}{'+burst' if burst else ''}") if tenancy is None else None,
        )

    for case in args.cases.split(","):
        if case == "burst":
            experiments, trials, parallel = BURST_SMALL
            label = f"{experiments}x({trials}x{parallel})"
            floor = None
            if not args.no_floor:
                floor = await run_floor(cluster, label, experiments, trials, parallel, args.floor_writers, args.kind)
                show(floor, None)
            for burst in (None, BURST):
                op = await operator(label, experiments, trials, parallel, burst=burst)
                show(op, floor)
            continue
        if case == "unrelated":
            u = await run_unrelated(cluster, kubeconfig, logdir)
            per30 = u["cpu"] * 30 / u["window"]
            print(
                f"\n{UNRELATED_PODS} unrelated pods created, run and deleted in {u['window']:.0f}s while the "
                f"operator idled: CPU {u['cpu']:.2f}s ({per30:.2f}s per 30s), RSS idle {u['idle_rss']:.0f} MB, "
                f"peak {u['peak_rss']:.0f} MB ({(u['peak_rss'] / u['idle_rss'] - 1) * 100:+.0f}%)\n"
            )
            continue
        experiments, trials, parallel = CASES[case]
        label = {"pod": case, "job": f"{case} Jobs", "trainjob": f"{case} TrainJobs"}[args.kind]
        floor = None
        if not args.no_floor:
            floor = await run_floor(cluster, label, experiments, trials, parallel, args.floor_writers, args.kind)
            show(floor, None)
        if not args.no_operator:
            op = await operator(label, experiments, trials, parallel)
            show(op, floor)
            if args.tenancy:
                tenancy = Tenancy(cluster, kubeconfig, logdir)
                try:
                    op = await operator(label, experiments, trials, parallel, tenancy=tenancy)
                finally:  # its webhook configuration and ClusterRole, even when interrupted
                    await tenancy.teardown()
                show(op, floor)


if __name__ == "__main__":
    asyncio.run(main())
