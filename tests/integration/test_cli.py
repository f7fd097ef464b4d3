"""`kubectl hpo` against the real API server, with the operator running and KWOK choosing each trial
pod's fate. The CLI runs in-process through typer's CliRunner (plus one run of the installed
`kubectl-hpo` script), always with --kubeconfig and -n, as a user would."""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import datetime, timedelta
from pathlib import Path

import pytest
import yaml
from kubernetes import client
from typer.testing import CliRunner

from hpo_operator import client as hpo_client
from hpo_operator.cli.main import app
from tests.support.experiments import experiment, loss_is_x, restartable, x_space
from tests.support.kube import Cluster, serve_log, this_checkouts_crds, wait_until, write_log

runner = CliRunner()
X = x_space()


class Hpo:
    """Runs `kubectl hpo ARGS --kubeconfig K -n NS` in-process and checks it never shows a traceback."""

    def __init__(self, kubeconfig: str, namespace: str):
        self.kubeconfig, self.namespace = kubeconfig, namespace

    def __call__(self, *args: str, code: int = 0, kubeconfig: str | None = None):
        result = runner.invoke(app, [*args, "--kubeconfig", kubeconfig or self.kubeconfig, "-n", self.namespace])
        assert "Traceback" not in result.output, result.output
        assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
        assert result.exit_code == code, f"exit {result.exit_code}:\n{result.output}"
        return result

    def json(self, *args: str):
        return json.loads(self(*args, "-o", "json").stdout)

    def names(self, *args: str) -> list[str]:
        return [e["name"] for e in self.json("list", *args)["experiments"]]


@pytest.fixture
def hpo(kubeconfig, namespace, monkeypatch) -> Hpo:
    # Users run each command in its own process; here the commands of a test share one connection
    # per kubeconfig, which saves a TLS handshake per command.
    sessions: dict = {}
    connect = hpo_client.connect

    def shared(kubeconfig: str | None, context: str | None):
        if (kubeconfig, context) not in sessions:
            sessions[kubeconfig, context] = connect(kubeconfig, context)
        return sessions[kubeconfig, context]

    monkeypatch.setattr(hpo_client, "connect", shared)
    return Hpo(kubeconfig, namespace)


def phase(hpo: Hpo, name: str) -> str:
    return hpo.json("get", name)["summary"]["phase"]


def test_list_filters_sorts_and_pages(hpo, namespace, operator, kwok_nodes, tmp_path):
    names = ["alpha", "bravo", "charlie", "delta", "echo", "foxtrot", "golf"]
    docs = [experiment(n, X, annotations=loss_is_x("200ms"), max_trials=1) for n in names]
    for doc in docs[:3]:
        doc["metadata"]["labels"] = {"team": "vision"}
    manifest = tmp_path / "experiments.yaml"
    manifest.write_text(yaml.safe_dump_all(docs))

    out = hpo("create", "-f", str(manifest)).stdout
    assert out.splitlines() == [f"experiment.hpo.dev/{n} created" for n in names]
    wait_until(
        lambda: {e["phase"] for e in hpo.json("list")["experiments"]} == {"Succeeded"},
        timeout=60,
        what="the seven experiments to finish",
    )

    # The table: trial counts by status, the creator recorded by create.
    me = hpo.json("list")["experiments"][0]["creator"]
    assert me, "create records the authenticated user"
    table = hpo("list", "--sort-by", "name").stdout.splitlines()
    assert table[0].split()[:10] == [
        "NAME",
        "STATUS",
        "CREATOR",
        "CONFIGS",
        "TRIALS",
        "SUCCEEDED",
        "RUNNING",
        "PENDING",
        "QUEUED",
        "FAILED",
    ]
    assert table[1].split()[:10] == ["alpha", "Succeeded", me, "1/1", "1", "1", "0", "0", "0", "0"]
    assert [line.split()[0] for line in table[1:]] == names

    # Page numbers: 7 experiments, 3 per page, by name ascending and descending.
    pages = [hpo("list", "--sort-by", "name", "--page-size", "3", "--page", str(n)) for n in (1, 2, 3)]
    assert [[line.split()[0] for line in p.stdout.splitlines()[1:]] for p in pages] == [
        names[:3],
        names[3:6],
        names[6:],
    ]
    assert "Page 1 of 3 (7 experiments, 3 per page)" in pages[0].stderr
    page = hpo.json("list", "--sort-by", "name", "--order", "desc", "--page-size", "3", "--page", "1")
    assert (page["totalCount"], page["pageNumber"], [e["name"] for e in page["experiments"]]) == (
        7,
        1,
        ["golf", "foxtrot", "echo"],
    )
    assert hpo.names("--sort-by", "name", "--order", "desc") == names[::-1]

    # The API server's paging: --limit and --continue tokens.
    seen, token, requests = [], None, 0
    while True:
        data = hpo.json("list", "--limit", "3", *(["--continue", token] if token else []))
        seen += [e["name"] for e in data["experiments"]]
        requests += 1
        token = data["continue"]
        if not token:
            break
    assert (seen, requests) == (names, 3)
    assert "--continue" in hpo("list", "--limit", "3").stderr

    # Creation-time ranges: nothing is created tomorrow; a range around today holds all.
    created = datetime.fromisoformat(hpo.json("list")["experiments"][0]["created"].replace("Z", "+00:00"))
    day, tomorrow = created.strftime("%Y-%m-%d"), (created + timedelta(days=1)).strftime("%Y-%m-%d")
    assert hpo.names("--created-after", tomorrow) == []
    assert "No experiments found" in hpo("list", "--since", tomorrow).stderr
    assert sorted(hpo.names("--since", day, "--until", day)) == names
    before = (created - timedelta(minutes=5)).strftime("%Y-%m-%d %H:%M:%S")
    after = (created + timedelta(minutes=5)).strftime("%Y-%m-%d %H:%M:%S")
    assert sorted(hpo.names("--min-create-time", before, "--max-create-time", after)) == names
    assert hpo.names("--max-create-time", before) == []

    # Name keyword, creator, status, labels and tags.
    assert sorted(hpo.names("--name", "HA")) == ["alpha", "charlie"]
    assert len(hpo.names("--creator", me)) == 7 and len(hpo.names("--mine")) == 7
    assert hpo.names("--creator", "someone-else") == []
    assert len(hpo.names("--status", "succeeded")) == 7 and hpo.names("--status", "Running,Failed") == []
    assert sorted(hpo.names("--tag", "team=vision")) == ["alpha", "bravo", "charlie"]
    assert sorted(hpo.names("-l", "team!=vision")) == ["delta", "echo", "foxtrot", "golf"]

    # Bookmarks are a label.
    assert hpo("bookmark", "delta").stdout.strip() == "experiment delta bookmarked"
    assert hpo.names("--bookmarked") == ["delta"]
    hpo("unbookmark", "delta")
    assert hpo.names("--bookmarked") == []

    # -A: every namespace, with a NAMESPACE column.
    everywhere = hpo.json("list", "-A")["experiments"]
    assert {e["name"] for e in everywhere if e["namespace"] == namespace} == set(names)


def test_trials_restarts_metrics_logs_and_describe(api, hpo, namespace, operator, kwok_nodes, tmp_path):
    cluster = Cluster(api, namespace)
    # "curves" reports metrics per step on stdout (KWOK serves the pod's log from a file).
    log = tmp_path / "curves.log"
    write_log(log, ["starting"] + [f"epoch {s}: step={s} loss={v}" for s, v in ((1, 0.9), (2, 0.6), (3, 0.4))])
    serve_log(api, namespace, "curves-0000", log)
    cluster.create(experiment("curves", X, annotations={}, max_trials=1, metricsCollector={"source": "StdoutLog"}))
    # "restarts": fails=9 always fails (not retried), fails=0 succeeds.
    cluster.create(restartable("restarts"))

    watched = hpo("watch", "restarts", "--timeout", "60", "--interval", "0.5").stdout
    assert "experiment restarts Succeeded (MaxTrialsReached): 2/2 configurations" in watched
    runs = hpo.json("trials", "restarts")["runs"]
    by_fails = {r["parameters"]["fails"]: r for r in runs}
    failed, succeeded = by_fails["9"]["name"], by_fails["0"]["name"]
    assert by_fails["9"]["phase"] == "Failed" and by_fails["0"]["phase"] == "Succeeded"
    assert by_fails["0"]["metrics"] == {"loss": 1} and by_fails["0"]["labels"]["hpo.dev/launch-reason"] == "Suggestion"

    # ListRuns paging with a next-page token, and ordering.
    first = hpo("trials", "restarts", "--max-results", "1", "--order-by", "name asc")
    assert len(first.stdout.splitlines()) == 2 and "Next page token: 1" in first.stderr
    second = hpo.json("trials", "restarts", "--max-results", "1", "--page-token", "1", "--order-by", "name")
    assert second["nextPageToken"] == "0" and len(second["runs"]) == 1
    assert sorted([first.stdout.splitlines()[1].split()[0], second["runs"][0]["name"]]) == sorted([failed, succeeded])
    assert [r["name"] for r in hpo.json("trials", "restarts", "--order-by", "Name DESC")["runs"]] == sorted(
        [failed, succeeded], reverse=True
    )
    assert [
        r["name"]
        for r in hpo.json("runs", "restarts", "-l", "hpo.dev/launch-reason=Suggestion", "--status", "failed")["runs"]
    ] == [failed]

    # RestartHpoTrials by name: the failed trial is restarted, the succeeded one refused.
    results = hpo.json("restart-trials", "restarts", "--trials", f"{failed},{succeeded},nope", "--wait", "30")
    assert list(results) == [failed, succeeded, "nope"]
    assert (results[failed]["outcome"], results[failed]["decidedBy"], results[failed]["newTrial"]) == (
        "Accepted",
        "operator",
        f"{failed}-a2",
    )
    assert (results[succeeded]["outcome"], results[succeeded]["reason"]) == ("Refused", "ConfigurationAlreadySucceeded")
    assert results["nope"]["outcome"] == "NotFound"
    cluster.wait_trial(f"{failed}-a2", ("Failed",))
    # Trial names win over --params; neither is a no-op.
    both = hpo("restart-trials", "restarts", "--trials", succeeded, "--params", '{"fails": 9}')
    assert "trial names win" in both.stderr and "ConfigurationAlreadySucceeded" in both.stdout
    noop = hpo("restart-trials", "restarts")
    assert "nothing to restart" in noop.stdout

    # ... and by parameters: a new Trial the operator adopts, or a refusal with the reason.
    again = hpo.json("restart-trials", "restarts", "--params", '{"fails": 9}', "--wait", "30")
    ((name, result),) = again.items()
    assert name.startswith("restarts-u-") and result["outcome"] == "Accepted"
    assert cluster.get(name, "trials")["metadata"]["labels"]["hpo.dev/launch-reason"] == "User"
    refused = hpo.json("restart-trials", "restarts", "--params", '{"${fails}": "0"}')
    assert [(r["outcome"], r["reason"]) for r in refused.values()] == [("Refused", "ConfigurationAlreadySucceeded")]
    outside = hpo.json("restart-trials", "restarts", "--params", '{"fails": 4}')
    assert [(r["outcome"], r["reason"]) for r in outside.values()] == [("Refused", "InvalidParameters")]
    table = hpo("restart-trials", "restarts", "--trials", succeeded).stdout
    assert table.split("\n")[0].split()[:3] == ["TRIAL", "RESULT", "REASON"] and "Refused" in table

    # describe: spec summary, conditions, status history with times, best trial, trials.
    text = hpo("describe", "restarts").stdout
    for expected in (
        "Status:      Succeeded (MaxTrialsReached)",
        "Objective:   minimize loss",
        "Parameters:  fails int [0, 9] (step 9)",
        "Conditions",
        "Status history",
        f"Best trial:       {succeeded}",
        f"{failed}-a2",
        name,
    ):
        assert expected in text, expected
    history = text.split("Status history")[1].split("\n\n")[0].splitlines()
    assert history[1].split()[0] == "TIME" and [line.split()[2:] for line in history[2:]] == [
        ["Running", "Running"],
        ["Succeeded", "MaxTrialsReached"],
    ]
    detail = hpo.json("describe", "restarts")
    assert [h["phase"] for h in detail["statusHistory"]] == ["Running", "Succeeded"]
    assert all(h["time"] for h in detail["statusHistory"]) and detail["best"]["trialName"] == succeeded

    # Metrics with step and timestamp; logs through the API server.
    wait_until(lambda: phase(hpo, "curves") == "Succeeded", what="curves to finish")
    points = hpo.json("metrics", "curves-0000")
    assert [(p["name"], p["step"], p["value"]) for p in points] == [
        ("loss", 1, 0.9),
        ("loss", 2, 0.6),
        ("loss", 3, 0.4),
    ]
    assert all(p["timestamp"] for p in points)
    table = hpo("metrics", "--experiment", "restarts").stdout.splitlines()
    assert table[0].split() == ["TRIAL", "METRIC", "STEP", "VALUE", "TIMESTAMP", "(UTC)"]
    assert any(line.split()[:3] == [succeeded, "loss", "1"] for line in table[1:])
    verbose = hpo("trials", "curves", "--verbose").stdout
    assert "Metrics of curves-0000" in verbose and "hpo.dev/config=" in verbose
    assert [r["metricHistory"] for r in hpo.json("trials", "curves", "-v")["runs"]][0][1]["step"] == 2
    assert "epoch 2: step=2 loss=0.6" in hpo("logs", "curves-0000").stdout
    assert "epoch 3" in hpo("logs", "curves-0000", "--tail", "1").stdout


def test_stop_resume_copy_restart_and_delete(api, hpo, namespace, operator, kwok_nodes):
    cluster = Cluster(api, namespace)
    cluster.create(experiment("pausable", X, annotations={"sim.hpo.dev/hang": "true"}, max_trials=2, parallel=2))
    wait_until(lambda: hpo.json("get", "pausable")["summary"]["trialStatus"]["Running"] == 2, what="two running trials")

    assert "stopped (spec.suspend=true)" in hpo("stop", "pausable").stdout
    wait_until(lambda: phase(hpo, "pausable") == "Suspended", what="the experiment to be suspended")
    hpo("resume", "pausable")
    wait_until(lambda: phase(hpo, "pausable") == "Running", what="the experiment to run again")
    history = [h["phase"] for h in hpo.json("describe", "pausable")["statusHistory"]]
    assert history == ["Running", "Suspended", "Running"]
    assert "Suspended   Suspended" in hpo("describe", "pausable").stdout

    out = hpo("copy", "pausable", "--name", "pausable-copy", "--warm-start").stdout
    assert out.strip() == "experiment.hpo.dev/pausable-copy created (copy of pausable, warm-started from pausable)"
    copy = cluster.get("pausable-copy")
    assert copy["spec"]["warmStartFrom"] == "pausable" and not copy["spec"].get("suspend")
    assert copy["metadata"]["annotations"]["hpo.dev/original"] == "pausable"
    assert copy["metadata"]["annotations"]["hpo.dev/creator"]
    restarted = hpo.json("restart", "pausable")
    assert restarted["name"].startswith("pausable-") and restarted["original"] == "pausable"
    assert "warmStartFrom" not in cluster.get(restarted["name"])["spec"]

    assert hpo("delete", "pausable-copy").stdout.strip() == 'experiment.hpo.dev "pausable-copy" deleted'
    hpo("delete", restarted["name"])
    gone = hpo("describe", "pausable-copy", code=1)
    assert gone.stderr.strip() == f"error: experiment pausable-copy not found in namespace {namespace}"


def _service_account_kubeconfig(api: client.ApiClient, admin_kubeconfig: str, namespace: str, path: Path) -> str:
    """A kubeconfig for a service account that may do nothing."""
    core = client.CoreV1Api(api)
    core.create_namespaced_service_account(
        namespace, client.V1ServiceAccount(metadata=client.V1ObjectMeta(name="nobody"))
    )
    token = core.create_namespaced_service_account_token(
        "nobody",
        namespace,
        client.AuthenticationV1TokenRequest(spec=client.V1TokenRequestSpec(audiences=[], expiration_seconds=600)),
    ).status.token
    admin = yaml.safe_load(Path(admin_kubeconfig).read_text())
    path.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": admin["clusters"],
                "users": [{"name": "nobody", "user": {"token": token}}],
                "contexts": [
                    {
                        "name": "nobody",
                        "context": {"cluster": admin["clusters"][0]["name"], "user": "nobody", "namespace": namespace},
                    }
                ],
                "current-context": "nobody",
            }
        )
    )
    return str(path)


def test_errors_are_one_line_and_a_non_zero_exit(api, hpo, kubeconfig, namespace, crds, tmp_path):
    missing = f"error: experiment nope not found in namespace {namespace}"
    for args in (
        ["describe", "nope"],
        ["get", "nope"],
        ["trials", "nope"],
        ["stop", "nope"],
        ["resume", "nope"],
        ["copy", "nope"],
        ["delete", "nope"],
        ["bookmark", "nope"],
        ["watch", "nope"],
        ["restart-trials", "nope", "--trials", "a"],
        ["restart-trials", "nope"],
        ["metrics", "--experiment", "nope"],
        ["pareto", "nope"],
    ):
        result = hpo(*args, code=1)
        assert result.stderr.strip() == missing, args
        assert result.stdout == ""
    assert hpo("logs", "nope", code=1).stderr.strip() == f"error: trial nope not found in namespace {namespace}"
    assert "malformed JSON in --params" in hpo("restart-trials", "x", "--params", "{lr: 1}", code=1).stderr
    assert "invalid time '2024-1-1'" in hpo("list", "--since", "2024-1-1", code=1).stderr

    # The API server's own refusals: a schema error, and RBAC.
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(experiment("bad", X, annotations={}, max_trials=1, parallel=2)))
    refused = hpo("create", "-f", str(bad), code=1).stderr
    assert refused.startswith("error: experiment bad: the API server refused it:") and "parallelTrialCount" in refused
    nobody = _service_account_kubeconfig(api, kubeconfig, namespace, tmp_path / "nobody.kubeconfig")
    denied = hpo("list", code=1, kubeconfig=nobody).stderr
    assert denied.startswith(
        "error: permission denied: experiments.hpo.dev is forbidden: User "
        f'"system:serviceaccount:{namespace}:nobody" cannot list'
    )
    assert hpo("stop", "x", code=1, kubeconfig=nobody).stderr.startswith("error: permission denied:")

    # The installed console script, as kubectl runs it.
    script = Path(sys.executable).with_name("kubectl-hpo")
    proc = subprocess.run(
        [str(script), "describe", "nope", "--kubeconfig", kubeconfig, "-n", namespace],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert (proc.returncode, proc.stdout, proc.stderr) == (1, "", missing + "\n")
    proc = subprocess.run([str(script), "list", "--bogus"], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and "Usage: kubectl hpo list" in proc.stderr and "Traceback" not in proc.stderr


def test_pareto_prints_the_feasible_front_of_several_objectives(api, hpo, namespace, operator, kwok_nodes, tmp_path):
    cluster = Cluster(api, namespace)
    # A grid of x = 0.2, 0.4, 0.6, 0.8: accuracy and cost both x (a trade-off: every trial is on the
    # front), memory x too, at most 0.5: the front is x = 0.2 and 0.4.
    cluster.create(
        experiment(
            "mo",
            [{"name": "x", "type": "double", "min": 0.2, "max": 0.8, "step": 0.2}],
            annotations={
                "sim.hpo.dev/message": '{"acc": ${params.x}, "cost": ${params.x}, "memory": ${params.x}}',
                "sim.hpo.dev/duration": "200ms",
            },
            algorithm={"name": "grid", "seed": 2},
            max_trials=4,
            parallel=4,
            objective={
                "metrics": [
                    {"metricName": "acc", "type": "maximize", "referenceValue": 0},
                    {"metricName": "cost", "type": "minimize", "referenceValue": 1},
                ],
                "constraints": [{"metricName": "memory", "max": 0.5}],
            },
        )
    )
    cluster.create(experiment("single", X, annotations=loss_is_x("200ms"), max_trials=1))
    cluster.wait_finished("mo")
    assert "4 trials; a Pareto front of 2 (kubectl hpo pareto mo)" in hpo("watch", "mo").stdout
    front = hpo.json("pareto", "mo")
    assert [p["values"] for p in front["trials"]] == [{"acc": 0.4, "cost": 0.4}, {"acc": 0.2, "cost": 0.2}]
    assert (front["size"], front["truncated"]) == (2, False)
    # The area 0.4 x 0.6 + 0.2 x 0.2 that the two points dominate up to (acc 0, cost 1).
    assert front["hypervolume"] == pytest.approx(0.4 * 0.6 + 0.2 * 0.2)
    assert [p["parameters"] for p in hpo.json("pareto", "mo", "--all")["trials"]] == [{"x": "0.4"}, {"x": "0.2"}]
    table = hpo("pareto", "mo").stdout
    assert "Pareto front of mo: 2 trials, hypervolume 0.28" in table
    assert "acc ↑" in table and "cost ↓" in table and "x=0.4" in table and "x=0.6" not in table
    # The other commands: the front's size in the list, each trial's objectives and feasibility.
    [listed] = [e for e in hpo.json("list")["experiments"] if e["name"] == "mo"]
    assert (listed["objective"], listed["paretoFrontSize"], listed["bestValue"]) == (
        "maximize acc, minimize cost",
        2,
        None,
    )
    assert "front of 2" in hpo("list").stdout
    runs = {r["parameters"]["x"]: r for r in hpo.json("trials", "mo")["runs"]}
    assert runs["0.6"]["feasible"] is False and runs["0.4"]["objectiveValues"] == {"acc": 0.4, "cost": 0.4}
    assert "(infeasible)" in hpo("trials", "mo").stdout
    described = hpo("describe", "mo").stdout
    assert "memory <= 0.5" in described and "Pareto front: 2 trials" in described
    # A single objective has a best trial, not a front.
    refused = hpo("pareto", "single", code=1).stderr
    assert refused.strip() == "error: experiment single has a single objective: it has a best trial, not a Pareto front"


def test_extend_continues_a_finished_experiment_with_the_same_trials(
    hpo, namespace, kubectl, operator, kwok_nodes, tmp_path, api
):
    this_checkouts_crds(kubectl, ("experiments.status.spent", "durationSeconds"))
    manifest = tmp_path / "extend.yaml"
    manifest.write_text(yaml.safe_dump(experiment("extend", X, annotations=loss_is_x("200ms"), max_trials=3)))
    hpo("create", "-f", str(manifest))
    wait_until(lambda: phase(hpo, "extend") == "Succeeded", timeout=60, what="extend to finish")
    before = {t["metadata"]["name"]: t["metadata"]["uid"] for t in Cluster(api, namespace).trials().values()}
    assert sorted(before) == ["extend-0000", "extend-0001", "extend-0002"]

    out = hpo("extend", "extend", "--trials", "2").stdout.strip()
    assert out == "experiment extend extended (maxTrialCount 3 -> 5): it goes on with the same search"
    wait_until(
        lambda: len(Cluster(api, namespace).trials()) == 5 and phase(hpo, "extend") == "Succeeded",
        timeout=60,
        what="the extended experiment to finish",
    )
    after = {t["metadata"]["name"]: t["metadata"]["uid"] for t in Cluster(api, namespace).trials().values()}
    # The same Trials (the same objects), and the new ones numbered after them.
    assert {k: after[k] for k in before} == before
    assert sorted(after) == [f"extend-{i:04d}" for i in range(5)]
    described = hpo.json("describe", "extend")
    assert described["summary"]["reason"] == "MaxTrialsReached" and described["summary"]["configurations"] == 5
    assert described["spent"]["durationSeconds"] > 0
    assert "Spent" in hpo("describe", "extend").stdout

    # Nothing to extend by, and a goal reached, are refused by the plugin with the reason.
    assert hpo("extend", "extend", code=1).stderr.strip().startswith("error: give --trials, --duration")
