"""Katib Experiments converted by `kubectl hpo convert` (hpo_operator.convert.katib), on the local
cluster: every converted fixture is accepted by the API server (schema and CEL rules), the
simulated ones run to Succeeded on KWOK nodes, and a trial's stdout is read with the Katib
metricsFormat regex the conversion kept."""

from __future__ import annotations

from pathlib import Path

import pytest
from kubernetes import client

from hpo_operator.convert.katib import convert_yaml
from hpo_operator.search.samplers import torch_available
from tests.support.experiments import GROUP, VERSION
from tests.support.kube import Cluster, serve_log, wait_until, write_log

REPO = Path(__file__).resolve().parents[2]
FIXTURES = REPO / "tests" / "fixtures" / "katib"
CONVERTIBLE = sorted(FIXTURES.glob("*.yaml"))
# The fixtures whose pods KWOK plays (their pod template says how each pod ends).
SIMULATED = [p for p in CONVERTIBLE if "sim.hpo.dev/" in p.read_text()]


def ours(path: Path, gp: bool | None = None) -> dict:
    """The fixture converted, in the test's namespace rather than Katib's; bayesianoptimization as gp
    where the operator under test has PyTorch (the same environment as this test), else as tpe."""
    [converted] = convert_yaml(path.read_text(), gp=torch_available() if gp is None else gp)
    manifest = converted.manifest
    manifest["metadata"].pop("namespace", None)
    return manifest


def this_checkouts_crd(kubectl) -> None:
    """Applies this checkout's Experiment CRD, which has metricsCollector.metricsFormat: on a
    cluster shared with other checkouts, one of them may have applied an older CRD since this
    session began (the API server would then drop the field)."""
    kubectl.run("apply", "--server-side", "--force-conflicts", "-f", str(REPO / "crds" / "experiments.yaml"))
    wait_until(
        lambda: "metricsFormat" in kubectl.run("explain", "experiments.spec.metricsCollector", check=False).stdout,
        timeout=30,
        what="the CRD with metricsFormat to be served",
    )


def with_metrics_format(kubectl, cluster: Cluster, body: dict) -> None:
    """Creates the experiment, checking that its metricsFormat was stored."""
    this_checkouts_crd(kubectl)
    created = cluster.create(body)
    assert created["spec"]["metricsCollector"]["metricsFormat"] == body["spec"]["metricsCollector"]["metricsFormat"]


def test_the_simulated_fixtures_are_most_of_them():
    # A fixture that lost its simulation would silently stop being run.
    assert len(SIMULATED) >= 10 and {p.stem for p in CONVERTIBLE} - {p.stem for p in SIMULATED} == {
        "mnist-tpe",
        "trainjob",
        "pytorchjob",
        "jobset",
        "pbt",  # checkpoint claims need volumes: simple-pbt runs in test_population.py
        "simple-pbt",
    }


@pytest.mark.parametrize("path", CONVERTIBLE, ids=lambda p: p.stem)
def test_a_converted_fixture_is_accepted_by_the_api_server(api, current_crds, namespace, path: Path):
    body = ours(path, gp=True)
    created = client.CustomObjectsApi(api).create_namespaced_custom_object(
        GROUP, VERSION, namespace, "experiments", body, dry_run="All"
    )
    # As converted, with the server's defaults added (log: false, ...).
    assert len(created["spec"]["parameters"]) == len(body["spec"]["parameters"])
    for stored, sent in zip(created["spec"]["parameters"], body["spec"]["parameters"], strict=True):
        assert stored.items() >= sent.items()
    assert created["spec"]["trialTemplate"].keys() >= body["spec"]["trialTemplate"].keys()


def test_the_api_server_refuses_a_metrics_format_regex_without_two_groups(api, kubectl, crds, namespace):
    this_checkouts_crd(kubectl)
    body = ours(FIXTURES / "metrics-format.yaml")
    body["spec"]["metricsCollector"]["metricsFormat"] = [r"loss: (?:[0-9.]+)"]
    with pytest.raises(client.ApiException) as e:
        client.CustomObjectsApi(api).create_namespaced_custom_object(
            GROUP, VERSION, namespace, "experiments", body, dry_run="All"
        )
    assert e.value.status == 422 and "each metricsFormat regex needs two groups" in e.value.body


def test_the_simulated_fixtures_run_to_succeeded(api, kubectl, namespace, operator, kwok_nodes):
    cluster = Cluster(api, namespace)
    bodies = {path.stem: ours(path) for path in SIMULATED}
    for body in bodies.values():
        if "metricsFormat" in body["spec"].get("metricsCollector", {}):
            with_metrics_format(kubectl, cluster, body)
        else:
            cluster.create(body)
    trials = {}
    for name, body in bodies.items():
        exp = cluster.wait_finished(body["metadata"]["name"], timeout=240)
        assert exp["status"]["phase"] == "Succeeded", (name, exp["status"])
        trials[name] = [t for t in cluster.trials().values() if t["spec"]["experimentName"] == body["metadata"]["name"]]
        assert trials[name] and all(t["status"]["phase"] == "Succeeded" for t in trials[name]), name
    # Each trial's objective is what its converted template reported: the lr it was given (the
    # metrics-format fixture maximises accuracy, which it reports as the momentum).
    for name, found in trials.items():
        objective = "momentum" if name == "metrics-format" else "lr"
        for t in found:
            given = {p["name"]: p["value"] for p in t["spec"]["parameters"]}
            assert t["status"]["objectiveValue"] == pytest.approx(float(given[objective])), (name, t["status"])


def test_a_trial_reads_its_stdout_with_the_katib_regex_the_conversion_kept(
    api, kubectl, namespace, operator, kwok_nodes, tmp_path
):
    cluster = Cluster(api, namespace)
    body = ours(FIXTURES / "metrics-format.yaml")
    body["metadata"]["name"] = "regex"
    body["spec"].update(parallelTrialCount=1, maxTrialCount=1)
    annotations = body["spec"]["trialTemplate"]["job"]["spec"]["template"]["metadata"]["annotations"]
    del annotations["sim.hpo.dev/message"]  # the metrics come from stdout only
    annotations["sim.hpo.dev/duration"] = "8s"  # time to serve the Job's pod its log
    with_metrics_format(kubectl, cluster, body)
    pod = wait_until(
        lambda: next(
            iter(cluster.core.list_namespaced_pod(namespace, label_selector="hpo.dev/trial=regex-0000").items), None
        ),
        timeout=60,
        what="the trial's Job to start its pod",
    )
    log = tmp_path / "trial.log"
    write_log(
        log,
        [
            "epoch 1",
            "{metricName: accuracy, metricValue: 0.5} {metricName: loss, metricValue: 0.9}",
            "accuracy=0.99",  # our default form: not read when metricsFormat is given
            "{metricName: accuracy, metricValue: 0.75} {metricName: loss, metricValue: 0.25}",
        ],
    )
    serve_log(api, namespace, pod.metadata.name, log, container="training-container")
    exp = cluster.wait_finished("regex", timeout=120)
    assert exp["status"]["phase"] == "Succeeded", exp["status"]
    status = cluster.get("regex-0000", "trials")["status"]
    assert status["objectiveValue"] == 0.75
    assert {m["name"]: m["value"] for m in status["metrics"]} == {"accuracy": 0.75, "loss": 0.25}
