"""Experiments: list (ListHpoExperiments), get/describe, create, stop/resume, restart/copy, delete,
bookmark, and following one until it finishes."""

from __future__ import annotations

import copy
import time
from collections.abc import Iterator, Sequence
from typing import Any

import yaml
from kubernetes import client
from kubernetes.client import ApiException

from hpo_operator.api.vocabulary import A_CREATOR, A_ORIGINAL, API_VERSION, GROUP, L_BOOKMARKED, VERSION
from hpo_operator.api.vocabulary import FINISHED_PHASES as FINISHED

from .connection import Session
from .describe import ExperimentDetail, experiment_detail
from .errors import HpoError, InvalidInput, Timeout, translate
from .pareto import ParetoFront, pareto_front_view
from .query import ExperimentFilter, Page, paginate, sort_items
from .views import ExperimentSummary, experiment_summary

LIST_CHUNK = 500
# generateName adds 5 characters; an Experiment's name has at most 40.
GENERATED_PREFIX_MAX = 34


def _not_served(e: ApiException, plural: str) -> HpoError:
    if e.status == 404:
        return HpoError(
            f"the API server does not serve {plural}.{GROUP}/{VERSION}: are the hpo-operator CRDs installed?"
        )
    return translate(e)


def list_objects(s: Session, plural: str, namespace: str | None, selector: str | None = None) -> list[dict]:
    """Every object of a kind (namespace None: all namespaces), read in chunks of LIST_CHUNK."""
    items: list[dict] = []
    token = None
    while True:
        try:
            resp = s.list(plural, namespace, **_list_args(LIST_CHUNK, selector, token))
        except ApiException as e:
            raise _not_served(e, plural) from None
        items.extend(resp.get("items") or [])
        token = (resp.get("metadata") or {}).get("continue")
        if not token:
            return items


def _list_args(limit: int, selector: str | None, token: str | None) -> dict[str, Any]:
    """The keyword arguments of one list call: a chunk of `limit`, after `token`."""
    kwargs: dict[str, Any] = {"limit": limit}
    if selector:
        kwargs["label_selector"] = selector
    if token:
        kwargs["_continue"] = token
    return kwargs


def get_object(s: Session, plural: str, name: str, namespace: str | None = None) -> dict:
    """One experiment or trial; a missing one or a refusal becomes a readable HpoError."""
    ns = s.ns(namespace)
    try:
        return s.get(plural, ns, name)
    except ApiException as e:
        raise translate(e, kind=plural.removesuffix("s"), name=name, namespace=ns) from None


def get_experiment_object(s: Session, name: str, namespace: str | None = None) -> dict:
    return get_object(s, "experiments", name, namespace)


def whoami(s: Session) -> str | None:
    """The authenticated user's name (SelfSubjectReview), or None when the server will not say."""
    try:
        review = s.authn.create_self_subject_review(
            client.V1SelfSubjectReview(api_version="authentication.k8s.io/v1", kind="SelfSubjectReview")
        )
    except ApiException as e:
        if e.status in (403, 404, 405):
            return None
        raise translate(e) from None
    user = review.status.user_info if review.status else None
    return user.username if user else None


# --- list --------------------------------------------------------------------------------------------

_GETTERS = {"created": lambda x: x.created, "name": lambda x: x.name}


def _matching(objects: list[dict], flt: ExperimentFilter) -> list[ExperimentSummary]:
    result = []
    for obj in objects:
        summary = experiment_summary(obj)
        if flt.matches(name=summary.name, creator=summary.creator, phase=summary.phase, created=summary.created):
            result.append(summary)
    return result


def list_experiments(
    s: Session,
    namespace: str | None,
    *,
    filter: ExperimentFilter | None = None,
    selector: str | None = None,
    order: Sequence[tuple[str, bool]] = (("created", True),),
    page: int = 1,
    page_size: int | None = None,
) -> Page:
    """ListHpoExperiments with page numbers: every match is read, filtered, sorted, then paged.

    `namespace` None lists all namespaces; `order` is [(field, descending)] over created and name.
    """
    flt = filter or ExperimentFilter()
    matches = _matching(list_objects(s, "experiments", namespace, selector), flt)
    ordered = sort_items(matches, [*order, ("name", False)] if all(k != "name" for k, _ in order) else order, _GETTERS)
    if page_size is None:
        return Page(ordered, total=len(ordered), page=1, page_size=None)
    return paginate(ordered, page, page_size)


def list_experiments_chunk(
    s: Session,
    namespace: str | None,
    *,
    limit: int,
    continue_token: str | None = None,
    filter: ExperimentFilter | None = None,
    selector: str | None = None,
) -> Page:
    """One chunk of the API server's own paging (`limit` and `continue`), for large clusters.

    Items come in the server's order (by namespace and name). Filters other than labels apply to
    the chunk, so a page can hold fewer than `limit` items and still have a next one. `total` is
    the server's estimate of the items left after this chunk plus its size, when it gives one.
    """
    if limit < 1:
        raise InvalidInput(f"invalid --limit {limit}: it must be at least 1")
    try:
        resp = s.list("experiments", namespace, **_list_args(limit, selector, continue_token))
    except ApiException as e:
        if e.status == 410:
            raise HpoError("the continue token has expired: list again from the start") from None
        if e.status in (400, 422) and continue_token:
            raise InvalidInput(f"invalid continue token: {translate(e)}") from None
        raise _not_served(e, "experiments") from None
    items = resp.get("items") or []
    meta = resp.get("metadata") or {}
    left = meta.get("remainingItemCount")
    matches = _matching(items, filter or ExperimentFilter())
    return Page(matches, total=len(items) + (left or 0), page_size=limit, next_token=meta.get("continue") or None)


# --- one experiment --------------------------------------------------------------------------------


def get_experiment(s: Session, name: str, namespace: str | None = None) -> ExperimentSummary:
    return experiment_summary(get_experiment_object(s, name, namespace))


def describe_experiment(s: Session, name: str, namespace: str | None = None) -> ExperimentDetail:
    obj = get_experiment_object(s, name, namespace)
    ns = obj["metadata"]["namespace"]
    trials = [t for t in list_objects(s, "trials", ns) if (t.get("spec") or {}).get("experimentName") == name]
    trials.sort(key=lambda t: (t["metadata"].get("creationTimestamp") or "", t["metadata"]["name"]))
    return experiment_detail(obj, trials)


def pareto_front(s: Session, name: str, namespace: str | None = None, *, complete: bool = False) -> ParetoFront:
    """The Pareto front of an experiment with several objectives, as its status holds it (the first
    100 trials and the front's size), or with `complete`, computed whole from its Trials."""
    obj = get_experiment_object(s, name, namespace)
    if not ((obj.get("spec") or {}).get("objective") or {}).get("metrics"):
        raise InvalidInput(f"experiment {name} has a single objective: it has a best trial, not a Pareto front")
    trials = None
    if complete:
        ns = obj["metadata"]["namespace"]
        trials = [t for t in list_objects(s, "trials", ns) if (t.get("spec") or {}).get("experimentName") == name]
    return pareto_front_view(obj, trials)


def load_manifests(text: str, source: str = "the file") -> list[dict]:
    """The Experiments in a YAML or JSON file (several documents, or a v1 List)."""
    try:
        docs = [d for d in yaml.safe_load_all(text) if d is not None]
    except yaml.YAMLError as e:
        raise InvalidInput(f"{source} is not valid YAML: {e}") from None
    result = []
    for doc in docs:
        if isinstance(doc, dict) and doc.get("kind") == "List":
            result.extend(doc.get("items") or [])
        else:
            result.append(doc)
    if not result:
        raise InvalidInput(f"{source} holds no objects")
    for i, doc in enumerate(result, start=1):
        if not isinstance(doc, dict):
            raise InvalidInput(f"{source}: document {i} is not an object")
        if doc.get("kind") != "Experiment" or doc.get("apiVersion") != API_VERSION:
            raise InvalidInput(
                f"{source}: document {i} is a {doc.get('apiVersion')}/{doc.get('kind')}, "
                f"not an {API_VERSION} Experiment"
            )
        meta = doc.get("metadata") or {}
        if not meta.get("name") and not meta.get("generateName"):
            raise InvalidInput(f"{source}: document {i} has no metadata.name")
    return result


def _fresh(body: dict, namespace: str, creator: str | None) -> dict:
    body = copy.deepcopy(body)
    body.pop("status", None)
    meta = body.setdefault("metadata", {})
    for key in (
        "resourceVersion",
        "uid",
        "creationTimestamp",
        "generation",
        "managedFields",
        "selfLink",
        "deletionTimestamp",
        "ownerReferences",
        "finalizers",
    ):
        meta.pop(key, None)
    meta["namespace"] = namespace
    if creator:
        meta.setdefault("annotations", {})[A_CREATOR] = creator
    return body


def create_experiments(
    s: Session, docs: list[dict], namespace: str | None = None, creator: str | None = None
) -> list[ExperimentSummary]:
    """Creates Experiments (as `kubectl create`), recording `creator` in hpo.dev/creator.

    Objects without metadata.namespace go to `namespace` (default: the session's); one naming
    another namespace than an explicit `namespace` is refused, as kubectl does.
    """
    created: list[ExperimentSummary] = []
    for doc in docs:
        own = (doc.get("metadata") or {}).get("namespace")
        if own and namespace and own != namespace:
            raise InvalidInput(
                f"experiment {doc['metadata'].get('name')} names namespace {own}, not {namespace}: "
                f"pass --namespace {own} or remove metadata.namespace"
            )
    for doc in docs:
        ns = (doc.get("metadata") or {}).get("namespace") or s.ns(namespace)
        body = _fresh(doc, ns, creator)
        try:
            created.append(experiment_summary(s.create("experiments", ns, body)))
        except ApiException as e:
            name = body["metadata"].get("name") or body["metadata"].get("generateName")
            err = translate(e)
            message = (
                f"experiment {name} already exists in namespace {ns}"
                if e.status == 409
                else f"experiment {name}: {err}"
            )
            if created:
                message += f" (created before the error: {', '.join(c.name for c in created)})"
            raise type(err)(message) from None
    return created


def _patch_experiment(s: Session, name: str, namespace: str | None, body: dict) -> ExperimentSummary:
    ns = s.ns(namespace)
    try:
        return experiment_summary(s.patch("experiments", ns, name, body))
    except ApiException as e:
        raise translate(e, kind="experiment", name=name, namespace=ns) from None


def set_suspend(s: Session, name: str, suspend: bool, namespace: str | None = None) -> ExperimentSummary:
    """stop (true) and resume (false): spec.suspend, which the operator acts on."""
    return _patch_experiment(s, name, namespace, {"spec": {"suspend": suspend}})


def set_bookmark(s: Session, name: str, bookmarked: bool, namespace: str | None = None) -> ExperimentSummary:
    return _patch_experiment(
        s, name, namespace, {"metadata": {"labels": {L_BOOKMARKED: "true" if bookmarked else None}}}
    )


def clone_experiment(
    s: Session,
    name: str,
    namespace: str | None = None,
    *,
    new_name: str | None = None,
    warm_start: bool = False,
    creator: str | None = None,
) -> ExperimentSummary:
    """restart and copy: a new Experiment with this one's spec, annotated hpo.dev/original.

    With `warm_start`, its search algorithm first learns from the original's finished trials
    (spec.warmStartFrom). Without `new_name` the API server picks `<name>-xxxxx`. The copy starts
    unsuspended.
    """
    src = get_experiment_object(s, name, namespace)
    ns = src["metadata"]["namespace"]
    spec = copy.deepcopy(src.get("spec") or {})
    spec.pop("suspend", None)
    if warm_start:
        spec["warmStartFrom"] = name
    labels = {k: v for k, v in (src["metadata"].get("labels") or {}).items() if k != L_BOOKMARKED}
    meta: dict[str, Any] = {"namespace": ns, "annotations": {A_ORIGINAL: name}}
    if labels:
        meta["labels"] = labels
    if creator:
        meta["annotations"][A_CREATOR] = creator
    if new_name:
        meta["name"] = new_name
    else:
        meta["generateName"] = name[:GENERATED_PREFIX_MAX].rstrip("-") + "-"
    body = {"apiVersion": API_VERSION, "kind": "Experiment", "metadata": meta, "spec": spec}
    try:
        return experiment_summary(s.create("experiments", ns, body))
    except ApiException as e:
        if e.status == 409:
            raise translate(e).__class__(f"experiment {new_name} already exists in namespace {ns}") from None
        raise translate(e) from None


def delete_experiment(s: Session, name: str, namespace: str | None = None) -> None:
    """Deletes the experiment; the garbage collector removes its trials and pods."""
    ns = s.ns(namespace)
    try:
        s.custom.delete_namespaced_custom_object(
            GROUP, VERSION, ns, "experiments", name, propagation_policy="Background"
        )
    except ApiException as e:
        raise translate(e, kind="experiment", name=name, namespace=ns) from None


def follow_experiment(
    s: Session, name: str, namespace: str | None = None, *, timeout: float | None = None, interval: float = 1.0
) -> Iterator[ExperimentSummary]:
    """Yields the experiment's summary every `interval` seconds until it is Succeeded or Failed;
    raises Timeout after `timeout` seconds."""
    deadline = time.monotonic() + timeout if timeout else None
    while True:
        summary = get_experiment(s, name, namespace)
        yield summary
        if summary.phase in FINISHED:
            return
        if deadline is not None and time.monotonic() >= deadline:
            raise Timeout(
                f"timed out after {timeout:g}s waiting for experiment {name} to finish "
                f"(phase {summary.phase}, {summary.configurations}/{summary.max_trial_count} "
                "configurations)"
            )
        time.sleep(interval if deadline is None else max(0.0, min(interval, deadline - time.monotonic())))
