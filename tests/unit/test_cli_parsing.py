"""The pure parts of `kubectl hpo` and its client: times, filters, sorting, paging, parameters,
the views built from objects, the client-side restart rules, and CLI input errors that are caught
before any cluster is contacted."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import pytest
from typer.testing import CliRunner

from hpo_operator.cli.main import app
from hpo_operator.client import describe, views
from hpo_operator.client.errors import InvalidInput
from hpo_operator.client.query import (
    ExperimentFilter,
    TimeRange,
    build_selector,
    paginate,
    parse_names,
    parse_order_by,
    parse_params_json,
    parse_phases,
    parse_tag,
    parse_time,
    sort_direction,
    sort_field,
    sort_items,
    token_page,
)
from hpo_operator.client.trials import configuration_refusal, restart_refusal

UTC = UTC


# --- times ---------------------------------------------------------------------------------------


def test_times_are_dates_or_date_times_in_utc():
    assert parse_time("2023-03-31") == datetime(2023, 3, 31, tzinfo=UTC)
    assert parse_time("2023-03-31 10:29:30") == datetime(2023, 3, 31, 10, 29, 30, tzinfo=UTC)
    assert parse_time(" 2023-03-31T10:29:30Z ") == datetime(2023, 3, 31, 10, 29, 30, tzinfo=UTC)
    # As an upper bound, a bare date covers that whole day.
    assert parse_time("2023-03-31", end_of_day=True) == datetime(2023, 3, 31, 23, 59, 59, tzinfo=UTC)
    assert parse_time("2023-03-31 10:00:00", end_of_day=True) == datetime(2023, 3, 31, 10, tzinfo=UTC)


@pytest.mark.parametrize(
    "text",
    [
        "yesterday",
        "2023/03/31",
        "31-03-2023",
        "2023-3-31",
        "2023-03-31 10:29",
        "2023-03-31 10:29:30.5",
        "",
        "2023-03-31 10:29:30+02:00",
    ],
)
def test_times_in_other_formats_are_refused(text):
    with pytest.raises(InvalidInput, match="use yyyy-mm-dd or 'yyyy-mm-dd hh:mm:ss'"):
        parse_time(text)


@pytest.mark.parametrize("text", ["2023-02-30", "2023-13-01", "2023-03-31 25:00:00"])
def test_impossible_dates_are_refused(text):
    with pytest.raises(InvalidInput, match="invalid time"):
        parse_time(text)


def test_time_ranges_are_inclusive():
    r = TimeRange.parse("2023-03-01", "2023-03-31")
    assert r.contains(datetime(2023, 3, 1, tzinfo=UTC))
    assert r.contains(datetime(2023, 3, 31, 23, 59, 59, tzinfo=UTC))
    assert not r.contains(datetime(2023, 4, 1, tzinfo=UTC))
    assert not r.contains(datetime(2023, 2, 28, 23, 59, 59, tzinfo=UTC))
    assert not r.contains(None)
    assert TimeRange().contains(None)
    assert TimeRange.parse("2023-03-01 12:00:00", None).contains(datetime(2030, 1, 1, tzinfo=UTC))
    with pytest.raises(InvalidInput, match="empty"):
        TimeRange.parse("2023-04-01", "2023-03-01")


# --- filters ---------------------------------------------------------------------------------------


def test_experiment_filters():
    created = datetime(2023, 3, 31, 10, tzinfo=UTC)
    row = dict(name="MNIST-search", creator="alice", phase="Running", created=created)
    assert ExperimentFilter().matches(**row)
    assert ExperimentFilter(name="mnist").matches(**row)  # a keyword, any case
    assert not ExperimentFilter(name="cifar").matches(**row)
    assert ExperimentFilter(creator="alice").matches(**row)
    assert not ExperimentFilter(creator="bob").matches(**row)
    assert not ExperimentFilter(creator="alice").matches(**{**row, "creator": None})
    assert ExperimentFilter(phases=frozenset({"Running", "Failed"})).matches(**row)
    assert not ExperimentFilter(phases=frozenset({"Succeeded"})).matches(**row)
    assert ExperimentFilter(created=TimeRange.parse("2023-03-31", "2023-03-31")).matches(**row)
    assert not ExperimentFilter(created=TimeRange.parse("2023-04-01", None)).matches(**row)
    assert ExperimentFilter().empty and not ExperimentFilter(name="x").empty


def test_phases_match_without_regard_to_case():
    assert parse_phases("running, SUCCEEDED") == {"Running", "Succeeded"}
    assert parse_phases(["failed", "suspended"]) == {"Failed", "Suspended"}
    assert parse_phases(None) == frozenset()
    with pytest.raises(InvalidInput, match="unknown status 'FINISHED'"):
        parse_phases("FINISHED")
    assert parse_phases("early_stopped", ("EarlyStopped", "Failed")) == {"EarlyStopped"}


def test_tags_become_label_selectors():
    assert parse_tag("group=vision") == ("group", "vision")
    assert parse_tag("is_evaluation:true") == ("is_evaluation", "true")  # PAI's spelling
    assert parse_tag("example.com/team") == ("example.com/team", "")
    assert (
        build_selector("a=1", ["group:vision", "flag"], ["hpo.dev/bookmarked=true"])
        == "a=1,hpo.dev/bookmarked=true,group=vision,flag"
    )
    assert build_selector(None, []) is None
    for bad in ["=x", "a b=c", "k=" + "v" * 64, "k=-x"]:
        with pytest.raises(InvalidInput, match="invalid tag"):
            parse_tag(bad)


# --- sorting ------------------------------------------------------------------------------------------


def test_sort_fields_and_directions():
    assert sort_field("GmtCreateTime") == sort_field("created") == sort_field("creation-time") == "created"
    assert sort_field("Name") == "name"
    with pytest.raises(InvalidInput, match="cannot sort by 'size'"):
        sort_field("size")
    assert sort_direction("DESC") is True and sort_direction(None) is False
    assert sort_direction(None, default="desc") is True
    with pytest.raises(InvalidInput, match="invalid order 'down'"):
        sort_direction("down")


def test_order_by_takes_pai_and_short_spellings():
    assert parse_order_by("GmtCreateTime DESC,Name ASC") == [("created", True), ("name", False)]
    assert parse_order_by("name desc") == [("name", True)]
    assert parse_order_by(None) == [("created", False), ("name", False)]
    assert parse_order_by("created desc") == [("created", True), ("name", False)]  # names break ties
    with pytest.raises(InvalidInput, match="given twice"):
        parse_order_by("name,name desc")
    with pytest.raises(InvalidInput, match="FIELD"):
        parse_order_by("name desc please")


def test_sorting_by_several_keys():
    t1, t2 = datetime(2023, 1, 1, tzinfo=UTC), datetime(2023, 1, 2, tzinfo=UTC)
    items = [("b", t1), ("a", t2), ("c", t1), ("d", None)]
    getters = {"name": lambda x: x[0], "created": lambda x: x[1]}
    assert [x[0] for x in sort_items(items, [("created", False), ("name", False)], getters)] == ["d", "b", "c", "a"]
    assert [x[0] for x in sort_items(items, [("created", True), ("name", True)], getters)] == ["a", "c", "b", "d"]
    assert [x[0] for x in sort_items(items, [("created", True), ("name", False)], getters)] == ["a", "b", "c", "d"]
    assert [x[0] for x in sort_items(items, [("name", True)], getters)] == ["d", "c", "b", "a"]


# --- paging ---------------------------------------------------------------------------------------------


def test_page_numbers():
    items = list(range(7))
    pages = [paginate(items, n, 3) for n in (1, 2, 3, 4)]
    assert [p.items for p in pages] == [[0, 1, 2], [3, 4, 5], [6], []]
    assert {(p.total, p.pages) for p in pages} == {(7, 3)}
    assert paginate([], 1, 3).pages == 1
    with pytest.raises(InvalidInput, match="pages start at 1"):
        paginate(items, 0, 3)
    with pytest.raises(InvalidInput, match="at least 1"):
        paginate(items, 1, 0)


def test_page_tokens_chain_to_the_end():
    items = list(range(7))
    seen, token, pages = [], None, 0
    while True:
        page = token_page(items, token, 3)
        seen += page.items
        pages += 1
        token = page.next_token
        if token == "0":  # PAI's NextPageToken: 0 when everything was returned
            break
    assert seen == items and pages == 3
    assert token_page(items, "0", 10).next_token == "0"
    assert token_page(items, 99, 3).items == []
    for bad in ("abc", "-3"):
        with pytest.raises(InvalidInput, match="invalid page token"):
            token_page(items, bad, 3)


# --- parameters -------------------------------------------------------------------------------------------


def test_params_json_becomes_the_strings_trials_carry():
    assert parse_params_json('{"lr": "0.01", "layers": 2, "dropout": 0.5, "bn": true}') == {
        "lr": "0.01",
        "layers": "2",
        "dropout": "0.5",
        "bn": "true",
    }
    assert parse_params_json('{"${batch_size}": "32", "${lr}": "0.01"}') == {"batch_size": "32", "lr": "0.01"}
    assert parse_params_json(None) == parse_params_json("  ") == {}


@pytest.mark.parametrize(
    "text, message",
    [
        ('{"lr": ', "malformed JSON in --params"),
        ("lr=0.01", "malformed JSON in --params"),
        ('["lr", "0.01"]', "must be a JSON object"),
        ('{"lr": [0.01]}', "give a string or a number"),
        ('{"lr": null}', "give a string or a number"),
        ('{"lr": 1, "${lr}": 2}', "twice"),
        ('{"": 1}', "empty parameter name"),
    ],
)
def test_bad_params_json_is_refused(text, message):
    with pytest.raises(InvalidInput, match=message):
        parse_params_json(text)


def test_trial_names():
    assert parse_names("a, b,,a") == ["a", "b"]
    assert parse_names(["a,b", "c"]) == ["a", "b", "c"]
    assert parse_names(None) == []


# --- start-up ----------------------------------------------------------------------------------------------

# What the plugin must not load: it starts for every kubectl call, and Optuna alone (which the
# planner imports) costs about a second. `kubectl hpo dashboard` draws Optuna's plots with plotly,
# and imports them only when it runs.
PLUGIN_MUST_NOT_LOAD = (
    "optuna",
    "hpo_operator.planner",
    "hpo_operator.search",
    "hpo_operator.controller",
    "kopf",
    "sklearn",
    "plotly",
    "pandas",
)

# Imports every module of the plugin's and its client's packages and every name the client exports
# (the commands import these as they run), and prints what of PLUGIN_MUST_NOT_LOAD is loaded.
# `python -m hpo_operator.cli` (its __main__) would run the plugin, so it is left out.
_PLUGIN_IMPORTS = """
import importlib, pkgutil, sys
import hpo_operator.cli.main, hpo_operator.cli as cli, hpo_operator.client as client
for package in (cli, client):
    for module in pkgutil.iter_modules(package.__path__):
        if module.name != "__main__":
            importlib.import_module(f"{package.__name__}.{module.name}")
for name in client.__all__:
    getattr(client, name)
print(hpo_operator.cli.main.__file__)
print(sorted(m for m in sys.modules if any(m == h or m.startswith(h + ".") for h in sys.argv[1:])))
"""


def _in_fresh_python(code: str, *args: str) -> list[str]:
    """Runs `code` in a fresh interpreter (this one has loaded everything already), on the
    hpo_operator under test: the one this test imported, whatever the environment would find
    first. Returns its stdout's lines."""
    import hpo_operator

    source = Path(hpo_operator.__file__).resolve().parents[1]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(source), os.environ.get("PYTHONPATH")]))}
    out = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, env=env, timeout=120)
    assert out.returncode == 0, out.stderr
    where, *rest = out.stdout.splitlines()
    assert Path(where).resolve().parents[2] == source
    return rest


def test_the_plugin_and_its_client_load_no_optuna_nor_the_planner():
    [loaded] = _in_fresh_python(_PLUGIN_IMPORTS, *PLUGIN_MUST_NOT_LOAD)
    assert loaded == "[]", f"the plugin loads {loaded}"


# What the plugin's start and its --help leave for the commands that need them: the kubernetes
# client takes longer to import than all the rest of the plugin, and rich and yaml print tables
# and documents only. Neither does the start load the client's modules that import these.
START_MUST_NOT_LOAD = (
    "kubernetes",
    "urllib3",
    "rich",
    "yaml",
    "hpo_operator.client.connection",
    "hpo_operator.client.experiments",
    "hpo_operator.client.trials",
    "hpo_operator.dashboard",
)

_PLUGIN_HELP = """
import contextlib, io, sys
import hpo_operator.cli.main
print(hpo_operator.cli.main.__file__)
heavy = sys.argv[1:]
loaded = lambda: sorted(m for m in sys.modules if any(m == h or m.startswith(h + ".") for h in heavy))
print(loaded())
sys.argv[1:] = ["--help"]
with contextlib.redirect_stdout(io.StringIO()) as shown:
    try:
        hpo_operator.cli.main.main()
    except SystemExit as e:
        assert e.code == 0, e.code
assert "Usage: kubectl hpo" in shown.getvalue(), shown.getvalue()
print(loaded())
"""


def test_the_plugin_starts_and_shows_help_without_the_kubernetes_client_rich_or_yaml():
    at_import, after_help = _in_fresh_python(_PLUGIN_HELP, *START_MUST_NOT_LOAD)
    assert at_import == "[]", f"importing the plugin loads {at_import}"
    assert after_help == "[]", f"kubectl hpo --help loads {after_help}"


# --- views ------------------------------------------------------------------------------------------------


def experiment_object(**status) -> dict:
    return {
        "metadata": {
            "name": "mnist",
            "namespace": "ml",
            "creationTimestamp": "2023-03-31T10:29:30Z",
            "labels": {"hpo.dev/bookmarked": "true", "team": "vision"},
            "annotations": {"hpo.dev/creator": "alice", "hpo.dev/original": "old"},
        },
        "spec": {
            "objective": {"type": "maximize", "metricName": "accuracy", "goal": 0.99},
            "maxTrialCount": 8,
            "parallelTrialCount": 2,
            "parameters": [
                {"name": "lr", "type": "double", "min": 0.001, "max": 0.1, "log": True},
                {"name": "opt", "type": "categorical", "values": ["sgd", "adam"]},
            ],
        },
        "status": status,
    }


def test_experiment_summary_and_detail():
    obj = experiment_object(
        phase="Succeeded",
        configurations=8,
        trials=9,
        trialsSucceeded=7,
        trialsFailed=2,
        trialsRetried=1,
        statusHistory=[
            {"phase": "Running", "reason": "Running", "time": "2023-03-31T10:29:31Z"},
            {"phase": "Succeeded", "reason": "GoalReached", "time": "2023-03-31T11:00:00Z"},
        ],
        conditions=[
            {
                "type": "Succeeded",
                "status": "True",
                "reason": "GoalReached",
                "message": "done",
                "lastTransitionTime": "2023-03-31T11:00:00Z",
            }
        ],
        currentOptimalTrial={
            "trialName": "mnist-0003",
            "objectiveValue": 0.991,
            "parameters": [{"name": "lr", "value": "0.01"}],
            "metrics": [{"name": "accuracy", "value": 0.991}],
        },
    )
    s = views.experiment_summary(obj)
    assert (s.name, s.namespace, s.phase, s.reason, s.creator, s.original, s.bookmarked) == (
        "mnist",
        "ml",
        "Succeeded",
        "GoalReached",
        "alice",
        "old",
        True,
    )
    assert s.created == datetime(2023, 3, 31, 10, 29, 30, tzinfo=UTC)
    assert s.trial_status["Succeeded"] == 7 and s.trial_status["Failed"] == 2 and s.trial_status["Running"] == 0
    assert (s.best_trial, s.best_value, s.configurations, s.max_trial_count) == ("mnist-0003", 0.991, 8, 8)
    d = s.to_dict()
    assert d["created"] == "2023-03-31T10:29:30Z" and d["trialStatus"]["Succeeded"] == 7
    assert json.dumps(d)

    detail = describe.experiment_detail(obj, [])
    assert [(h.phase, h.reason) for h in detail.status_history] == [
        ("Running", "Running"),
        ("Succeeded", "GoalReached"),
    ]
    assert detail.best["parameters"] == {"lr": "0.01"}
    assert detail.spec["objective"] == "maximize accuracy (goal 0.99)"
    assert [p["range"] for p in detail.spec["parameters"]] == ["double [0.001, 0.1] (log)", "categorical {sgd, adam}"]
    # An experiment the operator has not seen yet.
    fresh = views.experiment_summary(experiment_object())
    assert (fresh.phase, fresh.trials, fresh.reason) == ("Created", 0, None)


def trial(name, phase, config, *, adopted=True, steps=(), **status) -> dict:
    meta = {
        "name": name,
        "creationTimestamp": "2023-03-31T10:29:30Z",
        "labels": {
            "hpo.dev/config": config,
            "hpo.dev/launch-reason": "Suggestion",
            "app.kubernetes.io/managed-by": "hpo-operator",
        }
        if adopted
        else {},
    }
    if adopted:
        meta["ownerReferences"] = [{"kind": "Experiment", "name": "e", "uid": "u", "controller": True}]
    return {
        "metadata": meta,
        "spec": {"experimentName": "e", "parameters": [{"name": "x", "value": config}]},
        "status": {"phase": phase, **status},
    }


def test_trial_summary_and_metric_history():
    t = trial(
        "e-0001",
        "Succeeded",
        "1",
        objectiveValue=0.4,
        metrics=[
            {"name": "loss", "value": 0.4, "step": 3, "timestamp": "2023-03-31T10:30:03Z"},
            {"name": "accuracy", "value": 0.9, "timestamp": "2023-03-31T10:30:04Z"},
        ],
        metricHistory=[
            {"name": "loss", "value": v, "step": s, "timestamp": f"2023-03-31T10:30:0{s}Z"}
            for s, v in ((1, 0.9), (2, 0.6), (3, 0.4))
        ],
    )
    s = views.trial_summary(t, history=True)
    assert (s.phase, s.objective_value, s.parameters, s.metrics) == (
        "Succeeded",
        0.4,
        {"x": "1"},
        {"loss": 0.4, "accuracy": 0.9},
    )
    assert "app.kubernetes.io/managed-by" not in s.labels and s.labels["hpo.dev/config"] == "1"
    # The final loss repeats the history's last step: listed once; accuracy has no step.
    assert [(p.name, p.step, p.value) for p in s.metric_history] == [
        ("loss", 1, 0.9),
        ("loss", 2, 0.6),
        ("loss", 3, 0.4),
        ("accuracy", None, 0.9),
    ]
    assert s.metric_history[0].timestamp == datetime(2023, 3, 31, 10, 30, 1, tzinfo=UTC)
    assert views.trial_summary(t).metric_history is None


# --- the client-side restart rules -------------------------------------------------------------------


def test_restart_refusals_mirror_the_operator():
    ok, failed, failed2 = trial("e-0", "Succeeded", "A"), trial("e-1", "Failed", "B"), trial("e-2", "Failed", "C")
    running_again = trial("e-2-a2", "Running", "C")
    refused_user = trial("mine", "Refused", "A", adopted=False, reason="ConfigurationAlreadySucceeded")
    waiting_user = trial("mine2", "Pending", "D", adopted=False)
    retried_ok = trial("e-1-a2", "Succeeded", "B")
    siblings = [ok, failed, failed2, running_again, refused_user, waiting_user]
    assert restart_refusal(failed, siblings) is None
    assert restart_refusal(ok, siblings) == (
        "ConfigurationAlreadySucceeded",
        "its configuration already succeeded in trial e-0",
    )
    assert restart_refusal(failed, siblings + [retried_ok])[0] == "ConfigurationAlreadySucceeded"
    assert restart_refusal(failed2, siblings) == (
        "ConfigurationActive",
        "its configuration is already running in trial e-2-a2",
    )
    assert restart_refusal(running_again, siblings) == ("TrialActive", "the trial has not finished")
    assert restart_refusal(refused_user, siblings)[0] == "TrialRefused"
    assert restart_refusal(waiting_user, siblings)[0] == "NotAdopted"


def test_configuration_refusals_use_the_configuration_hash():
    from hpo_operator.core.space import config_hash

    params = [
        {"name": "x", "type": "double", "min": 0, "max": 1},
        {"name": "c", "type": "categorical", "values": ["a", "b"]},
    ]
    done = trial("e-0", "Succeeded", config_hash({"x": "0.5", "c": "a"}))
    busy = trial("e-1", "Running", config_hash({"x": "0.25", "c": "b"}))
    siblings = [done, busy]
    refusal, normal = configuration_refusal({"x": "0.50", "c": "a"}, params, siblings)  # written differently
    assert refusal == ("ConfigurationAlreadySucceeded", "this configuration already succeeded in trial e-0")
    assert normal == {"x": "0.5", "c": "a"}
    assert configuration_refusal({"x": "0.25", "c": "b"}, params, siblings)[0][0] == "ConfigurationActive"
    assert configuration_refusal({"x": "0.75", "c": "b"}, params, siblings) == (None, {"x": "0.75", "c": "b"})
    assert configuration_refusal({"x": "2", "c": "b"}, params, siblings)[0][0] == "InvalidParameters"
    assert configuration_refusal({"x": "0.1"}, params, siblings)[0] == ("InvalidParameters", "missing parameters: c")


# --- the CLI's input errors (caught before the cluster is contacted) -----------------------------------

runner = CliRunner()
NO_CLUSTER = ["--kubeconfig", "/nonexistent/kubeconfig"]


def invoke(*args: str):
    result = runner.invoke(app, list(args))
    assert "Traceback" not in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    return result


def test_help_speaks_of_kubectl_hpo():
    result = invoke("--help")
    assert result.exit_code == 0 and "Usage: kubectl hpo" in result.output
    for name in (
        "list",
        "describe",
        "trials",
        "runs",
        "metrics",
        "logs",
        "restart-trials",
        "stop",
        "resume",
        "restart",
        "copy",
        "delete",
        "bookmark",
        "unbookmark",
        "watch",
        "create",
    ):
        assert name in result.output
    result = invoke("list", "-h")
    assert "Usage: kubectl hpo list" in result.output
    for option in ("--namespace", "--all-namespaces", "--kubeconfig", "--context", "--output", "--continue"):
        assert option in result.output


@pytest.mark.parametrize(
    "args, message",
    [
        (["list", "--since", "2023/01/01"], "error: invalid time '2023/01/01': use yyyy-mm-dd"),
        (["list", "--until", "tomorrow"], "error: invalid time 'tomorrow'"),
        (["list", "--status", "FINISHED"], "error: unknown status 'FINISHED'"),
        (["list", "--page", "1", "--limit", "3"], "error: use --page/--page-size or --limit/--continue, not both"),
        (["list", "--limit", "3", "--sort-by", "name"], "error: --sort-by and --order need --page/--page-size"),
        (["list", "--sort-by", "size"], "error: cannot sort by 'size'"),
        (["list", "--tag", "a b"], "error: invalid tag"),
        (["restart-trials", "e", "--params", '{"lr": '], "error: malformed JSON in --params"),
        (["restart-trials", "e", "--params", "[1]"], "error: --params must be a JSON object"),
        (["metrics"], "error: name a TRIAL, or an experiment with --experiment"),
        (["create", "-f", "/nonexistent/file.yaml"], "error: cannot read /nonexistent/file.yaml"),
        (["describe", "e"], "error: kubeconfig /nonexistent/kubeconfig does not exist"),
    ],
)
def test_bad_input_is_one_line_and_exit_1(args, message):
    result = invoke(*args, *NO_CLUSTER)
    assert result.exit_code == 1, result.output
    assert message in result.stderr
    assert result.stdout == ""


def test_an_untranslated_api_error_is_one_line_and_exit_1(monkeypatch):
    """The API server's errors that reach the command wrapper untranslated (the client words the
    ones it expects) end in one line too, although the wrapper imports no kubernetes client."""
    from kubernetes.client import ApiException

    from hpo_operator import client

    def refuse(kubeconfig, context):
        raise ApiException(status=403, reason="Forbidden")

    monkeypatch.setattr(client, "connect", refuse)
    result = invoke("list", *NO_CLUSTER)
    assert result.exit_code == 1, result.output
    assert result.stderr == "error: permission denied: 403 Forbidden\n"


def test_usage_errors_exit_2_with_usage():
    result = invoke("list", "-o", "xml")
    assert result.exit_code == 2
    assert "Usage: kubectl hpo list" in result.output
    result = invoke("describe")
    assert result.exit_code == 2 and "Missing argument" in result.output


def test_create_refuses_other_kinds(tmp_path):
    path = tmp_path / "trial.yaml"
    path.write_text("apiVersion: hpo.dev/v1alpha1\nkind: Trial\nmetadata: {name: t}\n")
    result = invoke("create", "-f", str(path), *NO_CLUSTER)
    assert result.exit_code == 1 and "is a hpo.dev/v1alpha1/Trial, not an hpo.dev/v1alpha1 Experiment" in result.stderr
    path.write_text("kind: [unclosed\n")
    result = invoke("create", "-f", str(path), *NO_CLUSTER)
    assert result.exit_code == 1 and "is not valid YAML" in result.stderr
