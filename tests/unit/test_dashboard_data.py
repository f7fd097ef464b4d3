"""The dashboard's pure parts: table rows, list filters, label selectors, the recovery view, and
the Optuna study and figures built from Trial objects."""

from __future__ import annotations

import copy
import json
from collections import Counter

import pytest
from optuna.trial import TrialState

from hpo_operator.api.vocabulary import L_CONFIG, L_LAUNCH
from hpo_operator.client import views
from hpo_operator.client.errors import InvalidInput
from hpo_operator.dashboard import data, figures, study
from tests.support import dashboard_objects as objs

XSS = ["<script>window.__xss=1</script>", '"><img src=x onerror="window.__xss=1">']


@pytest.fixture(scope="module")
def made():
    return objs.make("exp", 30, running=2)


# --- rows -----------------------------------------------------------------------------------------


# Where a trial row's fields are read in the Trial object as they are (the others are worked out:
# see the test), and the plugin's TrialSummary field for each row field it shares.
ROW_SOURCES = {
    "name": ("metadata", "name"),
    "reason": ("status", "reason"),
    "failureClass": ("status", "failureClass"),
    "exitCode": ("status", "exitCode"),
    "objective": ("status", "objectiveValue"),
    "objectiveValues": ("status", "objectiveValues"),
    "feasible": ("status", "feasible"),
    "retryOf": ("spec", "retryOf"),
    "retriedBy": ("status", "retriedBy"),
    "launchReason": ("metadata", "labels", L_LAUNCH),
    "config": ("metadata", "labels", L_CONFIG),
    "created": ("metadata", "creationTimestamp"),
    "started": ("status", "startTime"),
    "completed": ("status", "completionTime"),
}
SUMMARY_FIELDS = {
    "name": "name",
    "phase": "phase",
    "reason": "reason",
    "attempt": "attempt",
    "launchReason": "launch_reason",
    "config": "config",
    "retryOf": "retry_of",
    "retriedBy": "retried_by",
    "params": "parameters",
    "metrics": "metrics",
    "objective": "objective_value",
    "feasible": "feasible",
    "adopted": "adopted",
}


def _at(obj: dict, path: tuple[str, ...]):
    for key in path:
        obj = (obj or {}).get(key)
    return obj


def test_a_trial_row_says_what_the_trial_object_says_and_the_plugins_summary_is_built_on_it(made):
    # The row is the client's (views.trial_row), which the plugin's TrialSummary is built on: each
    # field checked against the object itself, so a field read from the wrong place fails.
    _, trials = made
    worked_out = {"phase", "message", "attempt", "params", "metrics", "steps", "adopted"}
    for t in trials:
        row, status = data.trial_row(t), t.get("status") or {}
        assert set(row) == set(ROW_SOURCES) | worked_out
        assert {k: row[k] for k in ROW_SOURCES} == {k: _at(t, path) for k, path in ROW_SOURCES.items()}
        assert (row["phase"], row["message"]) == (status.get("phase") or "Pending", status.get("message") or None)
        assert row["attempt"] == int(t["spec"].get("attempt") or 1)
        assert row["params"] == {p["name"]: str(p["value"]) for p in t["spec"]["parameters"]}
        assert row["metrics"] == {m["name"]: m["value"] for m in status.get("metrics") or []}
        assert row["steps"] == len(status.get("metricHistory") or [])
        owners = t["metadata"].get("ownerReferences") or []
        assert row["adopted"] == any(o["kind"] == "Experiment" and o.get("controller") for o in owners)
        summary = views.trial_summary(t)
        shared = {field: getattr(summary, field) for field in SUMMARY_FIELDS.values()}
        assert shared == {field: row[key] for key, field in SUMMARY_FIELDS.items()}


def test_trial_rows_follow_creation_order_and_cut_long_messages(made):
    _, trials = made
    shuffled = list(reversed(trials))
    assert [r["name"] for r in data.trial_rows(shuffled)] == [t["metadata"]["name"] for t in trials]
    long = copy.deepcopy(trials[0])
    long["status"]["message"] = "x" * (data.MESSAGE_LIMIT + 10)
    assert len(data.trial_row(long)["message"]) == data.MESSAGE_LIMIT + 1


def test_a_users_trial_belongs_to_the_experiment_it_names_before_it_has_labels():
    assert data.experiment_of({"metadata": {"name": "x"}, "spec": {"experimentName": "e"}}) == "e"
    assert data.experiment_of({"metadata": {"labels": {"hpo.dev/experiment": "f"}}, "spec": {}}) == "f"


def test_the_experiment_view_is_what_describe_shows(made):
    exp, _ = made
    exp = copy.deepcopy(exp)
    exp["metadata"]["namespace"] = "ns"
    view = data.experiment_view(exp)
    assert view["summary"]["name"] == "exp" and view["summary"]["creator"] == "alice"
    assert view["spec"]["parameters"][0] == {"name": "lr", "range": "double [0.0001, 0.1] (log)"}
    assert view["parameterNames"] == ["lr", "layers", "optimizer"]
    assert view["metricNames"] == ["loss", "accuracy"]
    assert view["best"]["trialName"] == exp["status"]["currentOptimalTrial"]["trialName"]
    assert "trials" not in view


# --- label selectors ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "selector, labels, matches",
    [
        ("team=vision", {"team": "vision"}, True),
        ("team==vision", {"team": "nlp"}, False),
        ("team!=vision", {}, True),  # as the API server: a missing label is "not equal"
        ("team!=vision", {"team": "vision"}, False),
        ("team", {"team": ""}, True),
        ("!team", {"team": "x"}, False),
        ("!team", {}, True),
        ("stage in (dev, prod),team", {"stage": "prod", "team": "a"}, True),
        ("stage in (dev,prod)", {"stage": "test"}, False),
        ("stage notin (dev)", {"stage": "prod"}, True),
        ("stage notin (dev)", {}, True),
        ("a=1,b=2", {"a": "1"}, False),
        ("", {"a": "1"}, True),
    ],
)
def test_label_selectors_match_as_the_api_server_matches(selector, labels, matches):
    assert data.selector_matches(data.parse_selector(selector), labels) is matches


@pytest.mark.parametrize("selector", ["a=b=c", "!a=b", "a in b", "=x"])
def test_malformed_label_selectors_are_refused(selector):
    with pytest.raises(InvalidInput, match="invalid label selector"):
        data.parse_selector(selector)


# --- the experiment list --------------------------------------------------------------------------------


def _experiment(name: str, phase: str, created: str, creator: str | None = None, labels: dict | None = None) -> dict:
    meta: dict = {"name": name, "namespace": "ns", "creationTimestamp": created, "labels": labels or {}}
    if creator:
        meta["annotations"] = {"hpo.dev/creator": creator}
    return {"metadata": meta, "spec": {"maxTrialCount": 5}, "status": {"phase": phase}}


EXPERIMENTS = [
    _experiment("mnist-a", "Running", "2026-01-02T10:00:00Z", "alice", {"team": "vision"}),
    _experiment(
        "mnist-b", "Succeeded", "2026-01-03T10:00:00Z", "bob", {"team": "vision", "hpo.dev/bookmarked": "true"}
    ),
    _experiment("bert", "Failed", "2026-01-01T10:00:00Z", None, {"team": "nlp"}),
]


def _names(params: dict, tags: tuple = (), me: str | None = None) -> list[str]:
    query = data.parse_list_query(params.get, tags)
    return [r["name"] for r in data.experiment_rows(EXPERIMENTS, query, me)]


def test_the_list_takes_the_plugins_filters_and_order():
    assert _names({}) == ["mnist-b", "mnist-a", "bert"]  # newest first
    assert _names({"sort": "name"}) == ["bert", "mnist-a", "mnist-b"]
    assert _names({"sort": "created", "order": "asc"}) == ["bert", "mnist-a", "mnist-b"]
    assert _names({"name": "MNIST"}) == ["mnist-b", "mnist-a"]
    assert _names({"creator": "alice"}) == ["mnist-a"]
    assert _names({"status": "running,failed"}) == ["mnist-a", "bert"]
    assert _names({"since": "2026-01-02", "until": "2026-01-02"}) == ["mnist-a"]
    assert _names({"selector": "team=vision"}) == ["mnist-b", "mnist-a"]
    assert _names({}, tags=("team:nlp",)) == ["bert"]
    assert _names({"bookmarked": "true"}) == ["mnist-b"]
    assert _names({"mine": "true"}, me="bob") == ["mnist-b"]


@pytest.mark.parametrize(
    "params, message",
    [
        ({"status": "done"}, "unknown status"),
        ({"since": "yesterday"}, "invalid time"),
        ({"sort": "size"}, "cannot sort by"),
        ({"order": "up"}, "invalid order"),
        ({"creator": "a", "mine": "true"}, "creator or mine"),
        ({"selector": "a in b"}, "invalid label selector"),
    ],
)
def test_bad_list_filters_say_what_is_wrong(params, message):
    with pytest.raises(InvalidInput, match=message):
        data.parse_list_query(params.get)


def test_mine_needs_to_know_who_you_are():
    with pytest.raises(InvalidInput, match="did not say who you are"):
        _names({"mine": "true"}, me=None)


# --- recovery ---------------------------------------------------------------------------------------------


def test_recovery_lists_each_troubled_configuration_with_its_attempts_in_order(made):
    _, trials = made
    rec = data.recovery(data.trial_rows(trials))
    fates = {i: objs.fates(i, 30 - 2) for i in range(30)}
    troubled = {i for i, f in fates.items() if len(f) > 1 or f[0][0] in ("Failed", "Killed")}
    assert rec["configurations"] == 30
    assert len(rec["rows"]) == len(troubled) and rec["clean"] == 30 - len(troubled)
    evicted = next(r for r in rec["rows"] if r["attempts"][0]["name"] == "exp-0005")
    assert [(a["name"], a["phase"], a["failureClass"]) for a in evicted["attempts"]] == [
        ("exp-0005", "Failed", "Infrastructure"),
        ("exp-0005-a2", "Failed", "Infrastructure"),
        ("exp-0005-a3", "Succeeded", None),
    ]
    assert evicted["outcome"] == "Succeeded" and evicted["failedAttempts"] == 2
    assert evicted["failedSeconds"] == sum(a["seconds"] for a in evicted["attempts"][:2]) > 0
    # The most failed attempts first.
    assert [r["failedAttempts"] for r in rec["rows"]] == sorted(
        (r["failedAttempts"] for r in rec["rows"]), reverse=True
    )


def test_recovery_counts_what_each_failure_class_cost(made):
    _, trials = made
    rec = data.recovery(data.trial_rows(trials))
    by_class = {c["failureClass"]: c for c in rec["byFailureClass"]}
    failed = [t for t in trials if t["status"]["phase"] in ("Failed", "Killed")]
    expected = Counter(t["status"].get("failureClass") or t["status"]["reason"] for t in failed)
    assert {k: c["attempts"] for k, c in by_class.items()} == dict(expected)
    # Infrastructure and OOMKilled failures were retried until they succeeded; Error is not retried.
    assert by_class["Infrastructure"]["recovered"] == by_class["Infrastructure"]["configurations"] > 0
    assert by_class["OOMKilled"]["recovered"] == by_class["OOMKilled"]["configurations"] > 0
    assert by_class["Error"]["recovered"] == 0
    assert all(r["config"] for r in rec["rows"])


def test_recovery_leaves_out_trials_that_never_ran(made):
    _, trials = made
    refused = {
        "metadata": {"name": "exp-u-abcde"},
        "spec": {"experimentName": "exp", "parameters": []},
        "status": {"phase": "Refused", "reason": "InvalidParameters"},
    }
    assert data.recovery(data.trial_rows([*trials, refused]))["configurations"] == 30


# --- the study and the figures -----------------------------------------------------------------------


def test_the_study_has_one_trial_per_trial_that_ran_in_creation_order(made):
    exp, trials = made
    user = {
        "metadata": {"name": "exp-u-zzzzz", "creationTimestamp": "2026-11-20T09:00:00Z"},
        "spec": {"experimentName": "exp", "parameters": [{"name": "lr", "value": "5"}]},
        "status": {"phase": "Refused", "reason": "InvalidParameters"},
    }
    ts = study.build_study(exp["spec"], [*reversed(trials), user])
    phases = Counter(t["status"]["phase"] for t in trials)
    states = Counter(t.state for t in ts.study.get_trials())
    assert states[TrialState.COMPLETE] == phases["Succeeded"]
    assert states[TrialState.FAIL] == phases["Failed"] + phases["Killed"]
    assert states[TrialState.PRUNED] == phases["EarlyStopped"]
    assert states[TrialState.RUNNING] == phases["Running"] + phases["Pending"] + phases["Queued"]
    assert ts.names == [t["metadata"]["name"] for t in trials]
    for number, trial in enumerate(ts.study.get_trials()):
        assert trial.user_attrs["trial"] == ts.names[number]


def _points(fig_json: str, name: str) -> list:
    trace = next(t for t in json.loads(fig_json)["data"] if t.get("name") == name)
    return trace["x"]


def test_the_history_has_one_point_per_succeeded_trial_and_the_best_so_far(made):
    exp, trials = made
    ts = study.build_study(exp["spec"], trials)
    fig = json.loads(figures.to_json(figures.history(ts)))
    points = next(t for t in fig["data"] if t.get("mode") == "markers" and t.get("x"))
    succeeded = [
        n
        for n, t in enumerate(sorted(trials, key=lambda t: t["metadata"]["creationTimestamp"]))
        if t["status"]["phase"] == "Succeeded"
    ]
    assert points["x"] == succeeded
    best = next(t for t in fig["data"] if t.get("name") == "Best Value")
    values = [v for v in best["y"] if v is not None]
    assert values == sorted(values, reverse=True)  # minimising: never worse than before
    assert values[-1] == exp["status"]["currentOptimalTrial"]["objectiveValue"]


def test_parallel_coordinates_have_the_objective_and_one_axis_per_parameter(made):
    exp, trials = made
    fig = json.loads(figures.to_json(figures.parallel(study.build_study(exp["spec"], trials))))
    (trace,) = fig["data"]
    assert trace["type"] == "parcoords"
    assert [d["label"] for d in trace["dimensions"]] == ["loss", "lr (log)", "layers", "optimizer"]
    succeeded = sum(t["status"]["phase"] == "Succeeded" for t in trials)
    assert all(len(d["values"]) == succeeded for d in trace["dimensions"])
    assert trace["dimensions"][3]["ticktext"] == objs.OPTIMIZERS


def test_parallel_coordinates_of_many_trials_show_the_best_and_a_spread_of_the_rest(made, monkeypatch):
    exp, trials = made
    ts = study.build_study(exp["spec"], trials)
    complete = ts.trials(TrialState.COMPLETE)
    monkeypatch.setattr(figures, "PARALLEL_LINES", 6)
    fig = json.loads(figures.to_json(figures.parallel(ts)))
    shown = fig["data"][0]["dimensions"][0]["values"]
    values = sorted(t.value for t in complete)
    assert len(shown) == 6 and sorted(shown)[:3] == values[:3]  # the 3 best (minimising)
    assert max(shown) >= values[len(values) * 2 // 3]  # and some of the worst third
    assert f"6 of {len(complete)} succeeded trials" in fig["layout"]["title"]["text"]


def test_user_strings_reach_plotly_escaped():
    exp, trials = objs.make("xss", 12, optimizers=XSS + ["plain"], running=0)
    ts = study.build_study(exp["spec"], trials)
    parallel = json.loads(figures.to_json(figures.parallel(ts)))["data"][0]
    # Parcoords writes its labels as plain text; the other plots read markup and get it escaped.
    assert parallel["dimensions"][3]["ticktext"] == XSS + ["plain"]
    for kind in ("slice", "history", "importance"):
        text = figures.to_json(figures.figure(kind, exp["spec"], trials, study=ts))
        assert "<script>" not in text and "<img" not in text
    assert "&lt;img" in figures.to_json(figures.slices(ts))  # the categorical axis' values
    assert study.plain('<a href="x">&</a>') == '&lt;a href="x"&gt;&amp;&lt;/a&gt;'


def test_importance_needs_two_results_and_a_parameter_that_varies(made):
    exp, trials = made
    fig = figures.importance(study.build_study(exp["spec"], trials))
    assert fig.data[0].type == "bar" and set(fig.data[0].y) == {"lr", "layers", "optimizer"}
    one = [t for t in trials if t["status"]["phase"] == "Succeeded"][:1]
    empty = figures.importance(study.build_study(exp["spec"], one))
    assert not empty.data and "two succeeded trials" in empty.layout.annotations[0].text


def test_metric_curves_show_the_chosen_trials_or_the_latest_with_a_history(made):
    exp, trials = made
    fig = figures.curves(exp["spec"], trials, "accuracy", chosen=["exp-0001", "exp-0002"])
    assert [t.name for t in fig.data] == ["exp-0001", "exp-0002"]
    assert list(fig.data[0].x) == list(range(5)) and fig.layout.yaxis.title.text == "accuracy"
    latest = figures.curves(exp["spec"], trials)
    with_history = [t["metadata"]["name"] for t in trials if t["status"].get("metricHistory")]
    assert [t.name for t in latest.data] == with_history[-figures.DEFAULT_CURVES :]
    none = figures.curves(exp["spec"], trials, "nothing")
    assert not none.data and "no trial has reported nothing" in none.layout.annotations[0].text


def test_large_scatter_traces_are_drawn_with_webgl(monkeypatch):
    exp, trials = objs.make("big", 40, running=0)
    ts = study.build_study(exp["spec"], trials)
    assert {t["type"] for t in json.loads(figures.to_json(figures.slices(ts)))["data"]} == {"scatter"}
    monkeypatch.setattr(figures, "GL_POINTS", 10)
    assert {t["type"] for t in json.loads(figures.to_json(figures.slices(ts)))["data"]} == {"scattergl"}


# --- several objectives ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def several():
    return objs.make("mo", 40, running=2, multi=True)


def _trace(fig, name: str):
    return next(t for t in fig.data if t.name == name)


def test_a_study_of_several_objectives_has_each_trials_values_and_marks_the_infeasible(several):
    exp, trials = several
    ts = study.build_study(exp["spec"], trials)
    assert ts.multi and ts.objectives == ["loss", "latency_ms"] and ts.directions == ["minimize", "minimize"]
    assert ts.study.metric_names == ["loss", "latency_ms"]
    by_name = {t["metadata"]["name"]: t for t in trials}
    complete = ts.trials(TrialState.COMPLETE)
    assert len(complete) == sum(t["status"]["phase"] == "Succeeded" for t in trials)
    for trial in complete:
        status = by_name[trial.user_attrs["trial"]]["status"]
        assert trial.values == status["objectiveValues"]
        assert (trial.constraints[study.INFEASIBLE] > 0) == (status["feasible"] is False)
    assert any(t.constraints[study.INFEASIBLE] > 0 for t in complete)


def test_the_pareto_plot_draws_the_front_as_its_best_trials_and_the_infeasible_apart(several):
    exp, trials = several
    fig = figures.figure("pareto", exp["spec"], trials)
    front = {p["trialName"]: tuple(p["values"]) for p in exp["status"]["paretoFront"]}
    best = _trace(fig, "Best Trial")
    assert sorted(zip(best.x, best.y, strict=True)) == sorted(front.values())
    assert sorted(t.split("</b>")[0].removeprefix("<b>") for t in best.text) == sorted(front)  # hover names them
    infeasible = [t for t in trials if t["status"].get("feasible") is False]
    assert len(_trace(fig, "Infeasible Trial").x) == len(infeasible)
    assert sum(len(t.x) for t in fig.data) == sum(t["status"]["phase"] == "Succeeded" for t in trials)
    assert (fig.layout.xaxis.title.text, fig.layout.yaxis.title.text) == ("loss", "latency_ms")


def test_the_pareto_plot_says_why_it_is_empty():
    exp, trials = objs.make("one", 6, running=0)
    assert "one objective" in figures.figure("pareto", exp["spec"], trials).layout.annotations[0].text
    exp, trials = objs.make("mo", 6, running=0, multi=True)
    spec = copy.deepcopy(exp["spec"])
    spec["objective"]["metrics"] += [{"metricName": f"m{i}", "type": "minimize", "referenceValue": 1} for i in range(2)]
    assert "two or three objectives" in figures.figure("pareto", spec, trials).layout.annotations[0].text
    assert "no succeeded trial" in figures.figure("pareto", exp["spec"], trials[:0]).layout.annotations[0].text


def test_each_objective_has_its_own_history_with_the_best_feasible_value_so_far(several):
    exp, trials = several
    ts = study.build_study(exp["spec"], trials)
    done = [t for t in data.creation_order(trials) if t["status"]["phase"] == "Succeeded"]
    for index, name in enumerate(["loss", "latency_ms"]):
        fig = figures.figure("history", exp["spec"], trials, study=ts, metric=name)
        assert name in fig.layout.title.text
        feasible = [t["status"]["objectiveValues"][index] for t in done if t["status"]["feasible"]]
        assert list(_trace(fig, name).y) == feasible
        best = list(_trace(fig, "Best Value").y)
        assert best == sorted(best, reverse=True) and best[-1] == min(feasible)  # minimised, infeasible left out
    maximised = copy.deepcopy(exp["spec"])
    maximised["objective"]["metrics"][1]["type"] = "maximize"
    best = _trace(figures.history(study.build_study(maximised, trials), 1), "Best Value").y
    assert list(best) == sorted(best) and best[-1] == max(
        t["status"]["objectiveValues"][1] for t in done if t["status"]["feasible"]
    )


def test_parallel_coordinates_have_every_objective_and_the_colour_of_the_chosen_one(several):
    exp, trials = several
    ts = study.build_study(exp["spec"], trials)
    done = [t for t in data.creation_order(trials) if t["status"]["phase"] == "Succeeded"]
    for index, name in enumerate(["loss", "latency_ms"]):
        (trace,) = figures.figure("parallel", exp["spec"], trials, study=ts, metric=name).data
        assert [d.label for d in trace.dimensions][:3] == ["loss", "latency_ms", "lr (log)"]
        assert trace.line.colorbar.title.text == name
        assert list(trace.line.color) == [t["status"]["objectiveValues"][index] for t in done]


def test_importance_and_slices_show_the_chosen_objective(several):
    exp, trials = several
    ts = study.build_study(exp["spec"], trials)
    assert figures.figure("importance", exp["spec"], trials, study=ts, metric="latency_ms").data[0].name == (
        "latency_ms"
    )
    fig = figures.figure("slice", exp["spec"], trials, study=ts, metric="latency_ms")
    assert fig.layout.yaxis.title.text == "latency_ms"
    feasible = sorted(t.values[1] for t in ts.trials(TrialState.COMPLETE) if not t.constraints[study.INFEASIBLE])
    assert sorted(_trace(fig, "Feasible Trial").y) == feasible


def test_a_figure_of_an_objective_the_experiment_does_not_have_is_refused(several):
    exp, trials = several
    with pytest.raises(study.UnknownObjective, match="no objective 'nope': the objectives are loss, latency_ms"):
        figures.figure("history", exp["spec"], trials, metric="nope")


def test_the_view_of_several_objectives_has_them_the_front_its_size_and_hypervolume(several):
    exp, trials = several
    view = data.experiment_view(exp)
    assert [(o["name"], o["direction"]) for o in view["objectives"]] == [
        ("loss", "minimize"),
        ("latency_ms", "minimize"),
    ]
    assert view["summary"]["paretoFrontSize"] == exp["status"]["paretoFrontSize"] > 1
    assert view["summary"]["hypervolume"] == exp["status"]["hypervolume"] > 0
    front = view["paretoFront"]
    assert [t["trial"] for t in front["trials"]] == [p["trialName"] for p in exp["status"]["paretoFront"]]
    assert front["trials"][0]["values"] == dict(
        zip(["loss", "latency_ms"], exp["status"]["paretoFront"][0]["values"], strict=True)
    )
    assert view["spec"]["constraints"] == ["memory_gb <= 6"]
    rows = data.trial_rows(trials)
    assert {r["feasible"] for r in rows if r["phase"] == "Succeeded"} == {True, False}
    assert data.experiment_view(objs.make("one", 4)[0])["paretoFront"] is None
