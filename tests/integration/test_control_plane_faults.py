"""The control plane breaks under a running experiment; the operator rides it out, in-process.

Each test runs the same experiment, with failures and retries in it, while one fault hits the
operator's connection to the API server (tests/support/faults.py), then checks the exact outcome:
- every count (configurations, trials, retries, failed configurations) as without the fault;
- every configuration suggested once (no duplicate suggestion);
- every pod owned by an existing Trial of its name (no orphan pod), every Trial with its pod;
- the same operator process at the end, that saw the fault (its metrics count the watch restarts).

The operator talks to a second kube-apiserver of the local control plane (faults.ApiServer), on the
same etcd, which the test kills, restarts or freezes; the test itself reads through the main one,
as do KWOK and the controllers, so trial pods go on finishing while the operator is cut off (as
on a managed cluster whose API server restarts while the kubelets run on). Tests that need only a
TCP relay run on any cluster.
"""

from __future__ import annotations

import re
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
import urllib3
from kubernetes import client

from tests.support import faults
from tests.support.experiments import experiment, loss_is_x, x_space
from tests.support.kube import Cluster, OperatorProcess, free_port, wait_until
from tests.support.outcome import FaultyGrid

GRID = FaultyGrid()


def faulty_experiment(name: str, duration: str = "1500ms") -> dict:
    return FaultyGrid(duration=duration).experiment(name)


def check_exact_outcome(cluster: Cluster, name: str, timeout: float = 200) -> dict:
    try:
        exp = cluster.wait_finished(name, timeout=timeout)
    except AssertionError as e:
        # What the API server holds when the experiment did not finish, beside the operator's log
        # and metrics (printed at teardown): tells a stale view from a loop that stopped.
        trials = {n: (t.get("status") or {}).get("phase") for n, t in sorted(cluster.trials().items())}
        pods = {n: p.status.phase for n, p in sorted(cluster.pods().items())}
        raise AssertionError(f"{e}\ntrials on the API server: {trials}\npods on the API server: {pods}") from e
    pods = {n: client.ApiClient().sanitize_for_serialization(p) for n, p in cluster.pods().items()}
    wrong = [c for c in GRID.checks(exp, cluster.trials(), pods) if not c.ok]
    assert not wrong, "\n".join(f"{c.what}: expected {c.expected}, saw {c.seen}" for c in wrong)
    return exp


def operator_on(kubeconfig: Path, namespace: str, tmp_path: Path, **env: str) -> OperatorProcess:
    proc = OperatorProcess(
        str(kubeconfig), namespace, tmp_path / "operator.log", env={"HPO_UNREACHABLE_WARN_SECONDS": "3", **env}
    )
    proc.start()
    return proc


def same_process(op: OperatorProcess) -> None:
    assert op.starts == 1 and op.proc is not None and op.proc.poll() is None, "the operator did not survive"


def restarts(op: OperatorProcess, reason: str | None = None) -> float:
    """Watch restarts the operator counted (hpo_watch_restarts_total), for one reason or all."""
    return sum(
        v
        for k, v in op.metrics().items()
        if k.startswith("hpo_watch_restarts_total") and (reason is None or f'reason="{reason}"' in k)
    )


def writes(api, namespace: str) -> bool:
    """Whether the test's API server stores a write (an annotation on the namespace) now."""
    try:
        client.CoreV1Api(api).patch_namespace(
            namespace, {"metadata": {"annotations": {"test.hpo.dev/written": str(time.time())}}}, _request_timeout=5
        )
        return True
    except (client.ApiException, urllib3.exceptions.HTTPError):
        return False


def trials_so_far(cluster: Cluster) -> int:
    return len(cluster.trials())


def under_way(
    api,
    namespace: str,
    kubeconfig: Path,
    tmp_path: Path,
    stopped: list,
    name: str,
    duration: str = "1500ms",
    **env: str,
) -> tuple[Cluster, OperatorProcess]:
    """An operator on `kubeconfig`, and the experiment `name` it has started a few trials of."""
    cluster = Cluster(api, namespace)
    op = operator_on(kubeconfig, namespace, tmp_path, **env)
    stopped.append(op)
    cluster.create(faulty_experiment(name, duration))
    wait_until(lambda: trials_so_far(cluster) >= 6, timeout=90, what="the experiment to be under way")
    return cluster, op


@pytest.fixture
def stopped():
    """Operators stopped at teardown; the end of each log is printed (pytest shows it on failure)."""
    started: list[OperatorProcess] = []
    yield started
    for op in started:
        # Its rounds and watches as it saw them (was it still planning? when did a watch last hear?).
        samples = {k: v for k, v in op.metrics().items() if k.startswith(("hpo_reconcile_total", "hpo_watch"))}
        op.stop()
        print(f"--- {op.log_path}\n{op.log()[-6000:]}")
        print("--- its metrics at the end\n" + "\n".join(f"{k} {v}" for k, v in sorted(samples.items())))


def test_api_server_killed_twice_mid_experiment(api, namespace, crds, kwok_nodes, apiserver, tmp_path, stopped):
    """The scenario of the outage report: kube-apiserver SIGKILLed for 10 s, twice, 8 s apart."""
    cluster, op = under_way(
        api, namespace, apiserver.write_kubeconfig(tmp_path / "kubeconfig"), tmp_path, stopped, "killed"
    )
    for outage in (1, 2):
        apiserver.kill()
        time.sleep(10)
        apiserver.restart()
        if outage == 1:
            time.sleep(8)
    check_exact_outcome(cluster, "killed")
    same_process(op)
    assert restarts(op) >= 2
    log = op.log()
    assert re.search(r"cannot watch the API server for \d+ s", log), "no warning while it was away"
    assert "the API server answers again after" in log


@pytest.mark.alone
def test_etcd_restarted_mid_experiment(api, namespace, crds, kwok_nodes, local_cluster, apiserver, tmp_path, stopped):
    etcd = faults.Etcd(local_cluster)
    cluster, op = under_way(
        api, namespace, apiserver.write_kubeconfig(tmp_path / "kubeconfig"), tmp_path, stopped, "etcd"
    )
    etcd.kill()
    time.sleep(5)
    etcd.restart()
    # The fake nodes' kubelet (KWOK) dropped the status writes that failed meanwhile, and would
    # leave those pods Running for good (faults.Kwok); a kubelet retries them. Once the API server
    # writes again, KWOK is restarted to do just that.
    wait_until(lambda: writes(api, namespace), timeout=60, what="the API server to write again")
    faults.Kwok(local_cluster).restart()
    check_exact_outcome(cluster, "etcd")
    same_process(op)


@pytest.mark.alone
def test_410_gone_after_etcd_compaction_lists_again(api, namespace, crds, kwok_nodes, local_cluster, tmp_path, stopped):
    """etcd compacts the history an informer would go on from: its next watch gets 410 Gone. (The
    second API server runs without a watch cache, so that watches are served from etcd's history;
    the operator's watches end every 2 s, and each resumes from its last resourceVersion.)"""
    server = faults.ApiServer(local_cluster, tmp_path / "apiserver.log", ["--watch-cache=false"])
    server.start()
    try:
        cluster, op = under_way(
            api,
            namespace,
            server.write_kubeconfig(tmp_path / "kubeconfig"),
            tmp_path,
            stopped,
            "gone",
            HPO_WATCH_TIMEOUT_SECONDS="2",
        )
        etcd = faults.Etcd(local_cluster)

        def compacted_under_a_watch() -> bool:
            # A write anywhere moves etcd's revision past what the informers saw last; compacting
            # there leaves their next watch behind the history.
            client.CoreV1Api(api).create_namespaced_config_map(
                namespace, client.V1ConfigMap(metadata=client.V1ObjectMeta(generate_name="bump-"))
            )
            etcd.compact()
            time.sleep(1)
            return restarts(op, "Gone") >= 1

        wait_until(compacted_under_a_watch, timeout=60, interval=0, what="a watch to get 410 Gone")
        check_exact_outcome(cluster, "gone")
        same_process(op)
    finally:
        server.stop()


def test_connections_cut_mid_stream_then_half_open(
    api, namespace, crds, kwok_nodes, kubeconfig, relay, tmp_path, stopped
):
    """A TCP relay between the operator and the API server resets every connection, three times;
    then leaves the open ones half-open for good (no data, no error), so that only a client that
    gives up on a silent stream gets through. Runs on any cluster."""
    cluster, op = under_way(
        api,
        namespace,
        relay.write_kubeconfig(kubeconfig, tmp_path / "kubeconfig"),
        tmp_path,
        stopped,
        "relayed",
        duration="2s",
        HPO_WATCH_TIMEOUT_SECONDS="5",
        HPO_API_READ_TIMEOUT="5",
    )
    for _ in range(3):
        relay.drop()
        time.sleep(3)
    wait_until(lambda: restarts(op, "Disconnected") >= 2, timeout=30, what="the operator to see the cuts")
    cut = restarts(op)
    relay.blackhole()
    wait_until(lambda: restarts(op, "Timeout") >= 1, timeout=60, what="a silent watch to be given up")
    check_exact_outcome(cluster, "relayed")
    same_process(op)
    assert restarts(op) > cut


def test_api_server_frozen_for_30_seconds(api, namespace, crds, kwok_nodes, apiserver, tmp_path, stopped):
    """SIGSTOP: connections stay open and nothing answers (a control-plane node stalled, not gone)."""
    cluster, op = under_way(
        api, namespace, apiserver.write_kubeconfig(tmp_path / "kubeconfig"), tmp_path, stopped, "frozen"
    )
    apiserver.pause()
    time.sleep(30)
    apiserver.resume()
    check_exact_outcome(cluster, "frozen")
    same_process(op)


def test_leader_stops_before_the_lease_runs_out_when_the_api_server_is_away(
    api, namespace, crds, kwok_nodes, apiserver, tmp_path, stopped
):
    """Two replicas with leader election; the API server is away for longer than the lease. The
    leader cannot renew: it exits within the renew deadline, so before the standby can take over;
    once the API server is back the standby takes the Lease at once (it has seen the record
    unchanged for longer than the lease), and the old leader, restarted later as the kubelet would
    after its back-off, stands by. (Restarted before that, it would take its own Lease back, as
    client-go's election does for the same identity: also one leader.)"""
    lease = client.CoordinationV1Api(api)
    lease.create_namespaced_lease(
        namespace, client.V1Lease(metadata=client.V1ObjectMeta(name="hpo-operator"), spec=client.V1LeaseSpec())
    )

    def holder() -> str | None:
        return lease.read_namespaced_lease("hpo-operator", namespace).spec.holder_identity

    kc = apiserver.write_kubeconfig(tmp_path / "kubeconfig")
    timing = {
        "HPO_LEASE_DURATION_SECONDS": "6",
        "HPO_LEASE_RENEW_DEADLINE_SECONDS": "4",
        "HPO_LEASE_RETRY_PERIOD_SECONDS": "1",
    }
    replicas = {}
    for name in ("a", "b"):
        replicas[name] = OperatorProcess(
            str(kc),
            namespace,
            tmp_path / f"{name}.log",
            env={"HPO_LEADER_ELECTION_LEASE": f"{namespace}/hpo-operator", "POD_NAME": name, **timing},
        )
        stopped.append(replicas[name])
        replicas[name].start()
        if name == "a":
            wait_until(lambda: holder() == "a", timeout=60, what="replica a to lead")
    a, b = replicas["a"], replicas["b"]
    cluster = Cluster(api, namespace)
    cluster.create(faulty_experiment("leader"))
    wait_until(lambda: trials_so_far(cluster) >= 8, timeout=90, what="the experiment to be under way")

    apiserver.kill()
    away = time.monotonic()
    code = wait_until(lambda: a.proc.poll(), timeout=15, interval=0.1, what="the leader to give up")
    gave_up = time.monotonic() - away
    assert code == 1 and "leader election lost" in a.log()
    assert gave_up < 6, f"the leader acted for {gave_up:.1f} s without a Lease"
    assert b.proc.poll() is None  # the standby waits
    time.sleep(max(0.0, 10 - (time.monotonic() - away)))  # away for longer than the lease
    apiserver.restart()
    wait_until(lambda: holder() == "b", timeout=30, what="the standby to take over")
    a.start()  # the kubelet restarts the container: a standby now
    check_exact_outcome(cluster, "leader")
    assert holder() == "b" and b.proc.poll() is None and a.proc.poll() is None
    assert "now holds Lease" not in a.log().split("--- start 2")[1]


def test_a_watch_down_too_long_fails_the_liveness_probe_and_metrics_show_it(
    api, namespace, crds, apiserver, tmp_path, stopped
):
    """kopf's liveness endpoint fails while an informer has been down for
    HPO_WATCH_DOWN_LIVENESS_SECONDS (the kubelet would restart the pod), and answers again once
    the watches are back; the metrics give each informer's down time and newest event's age."""
    port = free_port()
    op = OperatorProcess(
        str(apiserver.write_kubeconfig(tmp_path / "kubeconfig")),
        namespace,
        tmp_path / "op.log",
        args=["--namespace", namespace, "--standalone", "--liveness", f"http://127.0.0.1:{port}/healthz"],
        env={"HPO_WATCH_DOWN_LIVENESS_SECONDS": "4"},
    )
    stopped.append(op)
    op.start()
    Cluster(api, namespace).create(faulty_experiment("probe"))  # informers start with the experiment

    def probe() -> int:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=5) as response:
                return response.status
        except urllib.error.HTTPError as e:
            return e.code
        except OSError:
            return 0

    wait_until(
        lambda: (
            probe() == 200
            and f'hpo_watch_last_event_age_seconds{{namespace="{namespace}",resource="pods"}}' in op.metrics()
        ),
        timeout=60,
        what="the probe to pass and the pods informer to report",
    )
    apiserver.kill()
    wait_until(lambda: probe() == 500, timeout=30, what="the probe to fail")
    down = op.metrics()[f'hpo_watch_down_seconds{{namespace="{namespace}",resource="pods"}}']
    assert down >= 4
    apiserver.restart()
    wait_until(lambda: probe() == 200, timeout=60, what="the probe to pass again")
    assert op.metrics()[f'hpo_watch_down_seconds{{namespace="{namespace}",resource="pods"}}'] == 0
    same_process(op)


# --- many experiments, and the writes that wait (the work queue, coalesced status writes) -------

SMALL = FaultyGrid(seeds=2, parallel=2)


def check_each_exactly(cluster: Cluster, names: list[str], timeout: float = 300) -> None:
    """Every experiment of `names` finished with SMALL's exact outcome (its own trials and pods)."""

    def phases() -> list:
        return [(cluster.get(n).get("status") or {}).get("phase") for n in names]

    wait_until(
        lambda: all(p in ("Succeeded", "Failed") for p in phases()),
        timeout=timeout,
        interval=2,
        what=f"{len(names)} experiments to finish",
    )
    time.sleep(3)  # trials written a moment after their experiment's status
    trials = cluster.trials()
    pods = {n: client.ApiClient().sanitize_for_serialization(p) for n, p in cluster.pods().items()}
    wrong = []
    for name in names:
        mine = {n: t for n, t in trials.items() if t["spec"]["experimentName"] == name}
        its_pods = {n: p for n, p in pods.items() if p["metadata"]["labels"].get("hpo.dev/experiment") == name}
        checks = SMALL.checks(cluster.get(name), mine, its_pods)
        wrong += [f"{name}: {c.what}: expected {c.expected}, saw {c.seen}" for c in checks if not c.ok]
    assert not wrong, "\n".join(wrong)


def test_many_small_experiments_ride_out_api_server_kills_and_an_operator_kill_with_exact_counts(
    api, namespace, crds, kwok_nodes, apiserver, tmp_path, stopped
):
    """Twelve small experiments at once (the work queue's turns, the fair share of writes, counts
    that wait for their turn) while the operator's API server is SIGKILLed twice and the operator
    once: every experiment ends with its exact counts. No periodic round hides a lost wake-up: the
    operator plans again only on events (HPO_RECONCILE_INTERVAL 60 s), and counts wait 3 s."""
    kc = apiserver.write_kubeconfig(tmp_path / "kubeconfig")
    cluster = Cluster(api, namespace)
    op = operator_on(kc, namespace, tmp_path, HPO_RECONCILE_INTERVAL="60", HPO_STATUS_INTERVAL="3")
    stopped.append(op)
    names = [f"small-{i}" for i in range(12)]
    for name in names:
        cluster.create(SMALL.experiment(name))
    total = SMALL.trials * len(names)
    wait_until(lambda: trials_so_far(cluster) >= total // 5, timeout=120, what="a fifth of the trials")
    apiserver.kill()
    time.sleep(6)
    apiserver.restart()
    wait_until(lambda: trials_so_far(cluster) >= total // 2, timeout=120, what="half of the trials")
    op.kill()
    time.sleep(1)
    op.start()
    wait_until(lambda: trials_so_far(cluster) >= 3 * total // 4, timeout=120, what="three quarters of the trials")
    apiserver.kill()
    time.sleep(4)
    apiserver.restart()
    check_each_exactly(cluster, names)
    assert op.starts == 2 and op.proc is not None and op.proc.poll() is None


def test_counts_that_wait_are_written_at_their_turn_after_the_api_server_comes_back(
    api, namespace, crds, kwok_nodes, apiserver, tmp_path, stopped
):
    """Four trials that run for a minute start while the operator's API server is down: once it is
    back the operator sees them running, and the Experiment's counts, a change of counts alone that
    waits for its turn (HPO_STATUS_INTERVAL 8 s), are written at that turn, with nothing else
    happening meanwhile (no trial finishes, no periodic round: HPO_RECONCILE_INTERVAL 300 s)."""
    kc = apiserver.write_kubeconfig(tmp_path / "kubeconfig")
    cluster = Cluster(api, namespace)
    op = operator_on(kc, namespace, tmp_path, HPO_RECONCILE_INTERVAL="300", HPO_STATUS_INTERVAL="8")
    stopped.append(op)
    cluster.create(
        experiment(
            "counts",
            x_space(),
            annotations=loss_is_x("60s"),
            max_trials=4,
            parallel=4,
        )
    )
    wait_until(
        lambda: (cluster.get("counts").get("status") or {}).get("trialsPending") == 4,
        timeout=60,
        what="four pending trials counted",
    )
    apiserver.kill()
    wait_until(
        lambda: [p.status.phase for p in cluster.pods().values()] == ["Running"] * 4,
        timeout=60,
        what="the four pods to run",
    )
    apiserver.restart()
    came_back = time.monotonic()
    status = wait_until(
        lambda: (st := cluster.get("counts").get("status") or {}).get("trialsRunning") == 4 and st,
        timeout=40,
        what="the experiment to count four running trials",
    )
    assert not status.get("trialsPending") and status["phase"] == "Running"
    assert all((t.get("status") or {}).get("phase") == "Running" for t in cluster.trials().values())
    assert time.monotonic() - came_back < 40
    same_process(op)
    # A SIGKILL loses nothing that waited: a new process counts from the Trials.
    op.kill()
    op.start()
    exp = cluster.wait_finished("counts", timeout=150)
    st = exp["status"]
    assert (st["phase"], st["trials"], st["trialsSucceeded"], st["trialsRunning"]) == ("Succeeded", 4, 4, 0)


def test_watches_the_api_server_refuses_for_load_are_opened_again_without_listing(
    api, namespace, crds, kwok_nodes, kubeconfig, tmp_path, stopped
):
    """The API server answers 429 to every watch opened for 10 s (a busy server's priority and
    fairness; the operator's watches end every 2 s here, so each is refused several times): the
    operator opens them again from where they were, without listing (a listing, and every
    experiment of the namespace waiting for it, would only load a busy server more), and the
    experiment ends with its exact counts. Runs on any cluster."""
    with faults.Throttle(kubeconfig, tmp_path / "throttle") as proxy:
        cluster, op = under_way(
            api,
            namespace,
            proxy.write_kubeconfig(kubeconfig, tmp_path / "kubeconfig"),
            tmp_path,
            stopped,
            "throttled",
            HPO_WATCH_TIMEOUT_SECONDS="2",
        )
        lists = op.metrics().get('hpo_api_requests_total{verb="list"}')
        proxy.throttle_watches(10)
        time.sleep(10)
        assert proxy.refused >= 6, proxy.refused
        assert restarts(op, "TooManyRequests") >= 4
        assert op.metrics().get('hpo_api_requests_total{verb="list"}') == lists  # no listing
        check_exact_outcome(cluster, "throttled")
        same_process(op)
