"""Trials: list (PAI's ListRuns), metrics, logs, and restarts (PAI's RestartHpoTrials)."""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Sequence
from typing import Any

from kubernetes.client import ApiException

from hpo_operator.api import admission as admission_rules
from hpo_operator.api.vocabulary import A_CREATOR, A_RESTART, API_VERSION, L_CONFIG, L_EXPERIMENT
from hpo_operator.core import times

from .connection import Session
from .errors import HpoError, InvalidInput, api_message, translate
from .experiments import get_experiment_object, get_object, list_objects
from .lineage import SegmentNode, forest
from .query import Page, paginate, parse_order_by, sort_items, token_page
from .views import MetricPoint, RestartResult, TrialSummary, metric_points, trial_summary

# A user-requested configuration's Trial: <experiment>-u-xxxxx (at most 40 + 3 + 5 characters).
USER_TRIAL_INFIX = "-u-"
RESTARTED_AS = re.compile(r"restarted as trial (\S+)")


def _phase(t: dict) -> str:
    return (t.get("status") or {}).get("phase") or "Pending"


def _name(t: dict) -> str:
    return t["metadata"]["name"]


def adopted(t: dict) -> bool:
    """Whether the experiment owns the trial (its own runs, and user trials it accepted)."""
    return any(
        o.get("kind") == "Experiment" and o.get("controller")
        for o in (t.get("metadata") or {}).get("ownerReferences") or []
    )


def trial_objects(s: Session, experiment: str, namespace: str, selector: str | None = None) -> list[dict]:
    """The experiment's Trials, refused and not yet adopted ones included (they have no labels)."""
    return [
        t
        for t in list_objects(s, "trials", namespace, selector)
        if (t.get("spec") or {}).get("experimentName") == experiment
    ]


def get_trial_object(s: Session, name: str, namespace: str | None = None) -> dict:
    return get_object(s, "trials", name, namespace)


_GETTERS: dict[str, Callable[[TrialSummary], Any]] = {"created": lambda t: t.created, "name": lambda t: t.name}


def list_trials(
    s: Session,
    experiment: str,
    namespace: str | None = None,
    *,
    selector: str | None = None,
    phases: frozenset[str] = frozenset(),
    order_by: str | None = None,
    page_token: str | None = None,
    max_results: int | None = None,
    page: int | None = None,
    page_size: int | None = None,
    verbose: bool = False,
) -> Page:
    """ListRuns for one experiment: parameters, final metrics and labels of each trial (with
    `verbose`, the per-step metric history too), filtered by labels and phase, ordered by creation
    time and/or name, paged by token (`page_token`, `max_results`) or by page number."""
    if page_token is not None and page is not None:
        raise InvalidInput("use either a page token or a page number, not both")
    ns = get_experiment_object(s, experiment, namespace)["metadata"]["namespace"]
    order = parse_order_by(order_by)
    runs = [trial_summary(t, history=verbose) for t in trial_objects(s, experiment, ns, selector)]
    runs = [r for r in runs if not phases or r.phase in phases]
    runs = sort_items(runs, order, _GETTERS)
    if page is not None or (page_size is not None and page_token is None and max_results is None):
        return paginate(runs, page or 1, page_size or max_results or 10)
    if page_token is not None or max_results is not None:
        return token_page(runs, page_token, max_results or page_size or 10)
    return Page(runs, total=len(runs), next_token="0")


def lineage(s: Session, experiment: str, namespace: str | None = None) -> list[SegmentNode]:
    """A pbt experiment's segments as a forest: each segment under the one whose checkpoint it
    started from (client/lineage.py). Empty for an experiment of another algorithm."""
    ns = get_experiment_object(s, experiment, namespace)["metadata"]["namespace"]
    return forest(trial_summary(t) for t in trial_objects(s, experiment, ns))


def trial_metrics(
    s: Session,
    *,
    trial: str | None = None,
    experiment: str | None = None,
    namespace: str | None = None,
    names: Sequence[str] = (),
) -> list[MetricPoint]:
    """Metric history (name, step, value, timestamp) of one trial or of every trial of an experiment."""
    if bool(trial) == bool(experiment):
        raise InvalidInput("name a trial, or an experiment with --experiment (not both)")
    if trial:
        objects = [get_trial_object(s, trial, namespace)]
    else:
        ns = get_experiment_object(s, experiment, namespace)["metadata"]["namespace"]  # type: ignore[arg-type]
        objects = sorted(
            trial_objects(s, experiment, ns),  # type: ignore[arg-type]
            key=lambda t: (t["metadata"].get("creationTimestamp") or "", _name(t)),
        )
    points = [p for t in objects for p in metric_points(t) if not names or p.name in names]
    return points


def trial_logs(
    s: Session,
    name: str,
    namespace: str | None = None,
    *,
    container: str | None = None,
    tail: int | None = None,
    timestamps: bool = False,
    limit_bytes: int | None = None,
) -> str:
    """The log of the trial's pod, read through the API server (as `kubectl logs`)."""
    trial = get_trial_object(s, name, namespace)
    ns = trial["metadata"]["namespace"]
    pod_name = (trial.get("status") or {}).get("podName") or name
    try:
        pod = s.core.read_namespaced_pod(pod_name, ns)
    except ApiException as e:
        if e.status == 404:
            raise HpoError(
                f"trial {name} has no pod: it has not started, or it was deleted (podRetention "
                "Delete removes a trial's pod once its result is recorded)"
            ) from None
        raise translate(e) from None
    containers = [c.name for c in pod.spec.containers]
    if container is None:
        primary = None
        try:
            exp = get_experiment_object(s, trial["spec"]["experimentName"], ns)
            primary = ((exp.get("spec") or {}).get("trialTemplate") or {}).get("primaryContainerName")
        except HpoError:
            pass
        container = primary if primary in containers else containers[0]
    elif container not in containers:
        raise InvalidInput(f"pod {pod_name} has no container {container} (containers: {', '.join(containers)})")
    kwargs: dict[str, Any] = {"container": container, "timestamps": timestamps, "_preload_content": False}
    if tail is not None:
        kwargs["tail_lines"] = tail
    if limit_bytes is not None:
        kwargs["limit_bytes"] = limit_bytes
    try:
        # Unparsed: the client would otherwise turn a log that is one JSON object into a dict.
        resp = s.core.read_namespaced_pod_log(pod_name, ns, **kwargs)
    except ApiException as e:
        if e.status == 403:
            raise translate(e) from None
        raise HpoError(f"cannot read the log of pod {pod_name}: {api_message(e)}") from None
    return resp.data.decode("utf-8", errors="replace")


# --- RestartHpoTrials --------------------------------------------------------------------------------


def _condition(t: dict, type_: str) -> dict | None:
    return next((dict(c) for c in (t.get("status") or {}).get("conditions") or [] if c.get("type") == type_), None)


def _runs(trial_key: str | None, siblings: Sequence[dict]) -> list[tuple[str, str]]:
    """The configuration's runs as the operator counts them: adopted, not refused."""
    return [
        (_name(t), _phase(t))
        for t in siblings
        if adopted(t)
        and _phase(t) != "Refused"
        and ((t.get("metadata") or {}).get("labels") or {}).get(L_CONFIG) == trial_key
    ]


def restart_refusal(trial: dict, siblings: Sequence[dict]) -> tuple[str, str] | None:
    """Why the operator would refuse to restart `trial` (its experiment's trials are `siblings`),
    or None: the operator's own rule, plus the trials it has not taken on."""
    name = _name(trial)
    if not adopted(trial):
        if _phase(trial) == "Refused":
            reason = (trial.get("status") or {}).get("reason") or "Refused"
            return "TrialRefused", f"trial {name} was refused ({reason}) and never ran"
        return "NotAdopted", f"trial {name} has not been accepted by its experiment yet"
    key = ((trial.get("metadata") or {}).get("labels") or {}).get(L_CONFIG)
    same = _runs(key, siblings) if key else [(name, _phase(trial))]
    return admission_rules.restart_refusal(_phase(trial), same)


def configuration_refusal(
    values: dict[str, str], parameters: list[dict], siblings: Sequence[dict]
) -> tuple[tuple[str, str] | None, dict[str, str]]:
    """Whether the operator would refuse to run this configuration, and its canonical values."""
    # Imported here: the search space builds the API's pydantic models, which only a configuration
    # given by its values needs (restart-trials --params); the plugin's other commands start without.
    from hpo_operator.api.parameters import Parameter
    from hpo_operator.core.space import InvalidConfiguration, config_hash, normalize_assignment

    try:
        normal = normalize_assignment([Parameter.model_validate(p) for p in parameters], values)
    except InvalidConfiguration as e:
        return ("InvalidParameters", str(e)), values
    return admission_rules.configuration_refusal(_runs(config_hash(normal), siblings)), normal


def _answer(name: str, cond: dict) -> RestartResult:
    if cond.get("status") == "True":
        m = RESTARTED_AS.search(cond.get("message") or "")
        return RestartResult(
            name,
            "Accepted",
            cond.get("reason") or "Restarted",
            cond.get("message") or "",
            "operator",
            m.group(1) if m else None,
        )
    return RestartResult(name, "Refused", cond.get("reason") or "Refused", cond.get("message") or "", "operator")


def _no_answer(name: str, wait: float, what: str) -> RestartResult:
    return RestartResult(
        name, "Pending", "NoAnswerYet", f"the operator did not answer within {wait:g}s; {what}", "operator"
    )


def restart_trials(
    s: Session,
    experiment: str,
    namespace: str | None = None,
    *,
    trials: Sequence[str] = (),
    params: dict[str, str] | None = None,
    wait: float = 5.0,
    poll: float = 0.25,
    creator: str | None = None,
) -> dict[str, RestartResult]:
    """RestartHpoTrials: re-run trials by name, or run one configuration given by its values.

    Trial names win when both are given; neither is a no-op (an empty result). A request the
    operator would refuse (the configuration already succeeded, is running, or is outside the
    search space) is refused here without asking; the others are asked of the operator (the
    annotation hpo.dev/restart, or a new Trial naming the configuration) and its answer is awaited
    for up to `wait` seconds. Returns one result per trial name, or one for the configuration.
    """
    exp = get_experiment_object(s, experiment, namespace)
    ns = exp["metadata"]["namespace"]
    if not trials and not params:
        return {}
    siblings = trial_objects(s, experiment, ns)
    if trials:
        return _restart_by_name(s, ns, experiment, list(trials), siblings, wait, poll)
    return _run_configuration(s, ns, exp, dict(params or {}), siblings, wait, poll, creator)


def _restart_by_name(
    s: Session, ns: str, experiment: str, names: list[str], siblings: list[dict], wait: float, poll: float
) -> dict[str, RestartResult]:
    by_name = {_name(t): t for t in siblings}
    results: dict[str, RestartResult] = {}
    asked: dict[str, dict | None] = {}
    for name in names:
        trial = by_name.get(name)
        if trial is None:
            try:
                other = s.get("trials", ns, name)
            except ApiException as e:
                if e.status != 404:
                    raise translate(e) from None
                results[name] = RestartResult(
                    name, "NotFound", "NotFound", f"trial {name} not found in namespace {ns}", "client"
                )
                continue
            results[name] = RestartResult(
                name,
                "Refused",
                "OtherExperiment",
                f"trial {name} belongs to experiment {(other.get('spec') or {}).get('experimentName')}",
                "client",
            )
            continue
        refusal = restart_refusal(trial, siblings)
        if refusal:
            results[name] = RestartResult(name, "Refused", refusal[0], refusal[1], "client")
            continue
        stamp = times.iso()
        try:
            s.patch("trials", ns, name, {"metadata": {"annotations": {A_RESTART: stamp}}})
        except ApiException as e:
            raise translate(e, kind="trial", name=name, namespace=ns) from None
        asked[name] = _condition(trial, "RestartAccepted")
        results[name] = _no_answer(name, wait, "the request (annotation hpo.dev/restart) stays until it does")
    deadline = time.monotonic() + wait
    while asked:
        for name, before in list(asked.items()):
            try:
                trial = s.get("trials", ns, name)
            except ApiException as e:
                if e.status == 404:
                    results[name] = RestartResult(name, "NotFound", "NotFound", "the trial was deleted", "operator")
                    del asked[name]
                    continue
                raise translate(e) from None
            answered = A_RESTART not in ((trial["metadata"].get("annotations")) or {})
            cond = _condition(trial, "RestartAccepted")
            # The operator removes the annotation, then writes the condition: wait for both (a
            # condition equal to the one before can only be trusted once time is up).
            if answered and cond and (cond != before or time.monotonic() >= deadline):
                results[name] = _answer(name, cond)
                del asked[name]
        if not asked or time.monotonic() >= deadline:
            break
        time.sleep(poll)
    return {name: results[name] for name in names}


def _run_configuration(
    s: Session,
    ns: str,
    exp: dict,
    values: dict[str, str],
    siblings: list[dict],
    wait: float,
    poll: float,
    creator: str | None,
) -> dict[str, RestartResult]:
    from hpo_operator.core.space import summary  # loaded by configuration_refusal already (see there)

    experiment = exp["metadata"]["name"]
    refusal, normal = configuration_refusal(values, (exp.get("spec") or {}).get("parameters") or [], siblings)
    if refusal:
        label = summary(values)
        return {label: RestartResult(label, "Refused", refusal[0], refusal[1], "client")}
    meta: dict[str, Any] = {
        "generateName": experiment + USER_TRIAL_INFIX,
        "namespace": ns,
        "labels": {L_EXPERIMENT: experiment},
    }
    if creator:
        meta["annotations"] = {A_CREATOR: creator}
    body = {
        "apiVersion": API_VERSION,
        "kind": "Trial",
        "metadata": meta,
        "spec": {"experimentName": experiment, "parameters": [{"name": k, "value": v} for k, v in normal.items()]},
    }
    try:
        name = _name(s.create("trials", ns, body))
    except ApiException as e:
        raise translate(e) from None
    deadline = time.monotonic() + wait
    while True:
        try:
            trial = s.get("trials", ns, name)
        except ApiException as e:
            raise translate(e, kind="trial", name=name, namespace=ns) from None
        status = trial.get("status") or {}
        if status.get("phase") == "Refused":
            return {
                name: RestartResult(
                    name, "Refused", status.get("reason") or "Refused", status.get("message") or "", "operator"
                )
            }
        if adopted(trial):
            return {
                name: RestartResult(
                    name,
                    "Accepted",
                    status.get("reason") or "WaitingForSlot",
                    f"trial {name} will run {summary(normal)}",
                    "operator",
                    name,
                )
            }
        if time.monotonic() >= deadline:
            return {name: _no_answer(name, wait, f"trial {name} waits for it")}
        time.sleep(poll)
