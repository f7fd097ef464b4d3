"""Which kinds trials may run as: the platform team's choice, not a tenant's.

The Helm chart's `trialKinds` grants the operator's ServiceAccount each kind besides pods and tells
the operator which they are (HPO_TRIAL_KINDS, a JSON list of {apiGroup, resource, kind}). An
Experiment whose trials would run as another kind is refused: at `kubectl apply` by the chart's
ValidatingAdmissionPolicy, and by the operator as InvalidSpec, whose loop then never watches that
kind (a watch its RBAC forbids would only be refused). Pods are always allowed; with HPO_TRIAL_KINDS
unset (an operator run by hand, as the tests and `make demo` run it) every kind is.

The refusal's words are spelled here, once for the operator; the chart's policy builds the same
text in CEL (deploy/helm/hpo-operator/templates/trial-kinds-policy.yaml), and
tests/integration/test_helm.py checks that the API server's refusal and refusal() agree, kind by kind.
"""

from __future__ import annotations

import json
from collections.abc import Iterable

from .external import KNOWN_KINDS
from .template import TrialTemplate

# The variable the chart sets on the operator's container.
ENV = "HPO_TRIAL_KINDS"
# Where the platform team enables a kind.
CHART_VALUE = "the hpo-operator chart's trialKinds"

GroupKind = tuple[str, str]  # (API group, "" for the core group; Kind)
POD: GroupKind = ("", "Pod")
JOB: GroupKind = ("batch", "Job")
# The kinds the chart knows by their resource alone ({apiGroup, resource}): it gives the operator
# their Kind itself. Any other kind needs its `kind` in the trialKinds entry.
KNOWN_RESOURCES: dict[GroupKind, str] = {JOB: "jobs", **{(k.group, k.kind): k.resource for k in KNOWN_KINDS}}
# The core group, as YAML writes an empty string.
EMPTY_GROUP = '""'
# What the operator does to a trial kind's objects (the chart's RBAC for each trialKinds entry).
VERBS = ("get", "list", "watch", "create", "delete")


def template_kind(template: TrialTemplate) -> GroupKind:
    """The group and Kind a trial template runs as, from the spec alone (as the policy reads it)."""
    if template.job is not None:
        return JOB
    if template.resource is not None:
        return template.resource.api_version.rpartition("/")[0], template.resource.kind
    return POD


def chart_entry(kind: GroupKind, resource: str | None = None) -> str:
    """The trialKinds entry that enables a kind; `resource`, its plural when known (discovery)."""
    group, name = kind
    shown = group or EMPTY_GROUP
    known = KNOWN_RESOURCES.get(kind)
    if known is not None:
        return f"{{apiGroup: {shown}, resource: {known}}}"
    return f"{{apiGroup: {shown}, resource: {resource or f'<plural of {name}>'}, kind: {name}}}"


def not_enabled(kind: GroupKind) -> str:
    """Why an Experiment of this kind is refused, and what the platform team sets."""
    group, name = kind
    return (
        f"trial kind {name} ({group or 'core'}) is not enabled by the platform: "
        f"add {chart_entry(kind)} to {CHART_VALUE}"
    )


def parse_allowed(text: str | None) -> frozenset[GroupKind] | None:
    """The kinds HPO_TRIAL_KINDS allows, pods always among them; None (unset): every kind.

    Raises ValueError for a value that is not a JSON list of objects with a string apiGroup and
    kind: the operator then stops at its start, rather than run with a guess."""
    if text is None:
        return None
    try:
        entries = json.loads(text)
    except ValueError as e:
        raise ValueError(f"{ENV} is not JSON ({e}): give a list of {{apiGroup, resource, kind}}") from None
    if not isinstance(entries, list) or not all(
        isinstance(e, dict) and isinstance(e.get("apiGroup"), str) and isinstance(e.get("kind"), str) and e["kind"]
        for e in entries
    ):
        raise ValueError(f"{ENV} must be a JSON list of {{apiGroup, resource, kind}} objects, not {text[:200]!r}")
    return allowed_set((e["apiGroup"], e["kind"]) for e in entries)


def allowed_set(kinds: Iterable[GroupKind]) -> frozenset[GroupKind]:
    return frozenset({POD, *kinds})


def refusal(template: TrialTemplate, allowed: frozenset[GroupKind] | None) -> str | None:
    """The InvalidSpec message of a template whose kind the platform did not enable, else None."""
    if allowed is None:
        return None
    kind = template_kind(template)
    return None if kind in allowed else not_enabled(kind)


def watch_forbidden(resource: str, namespace: str, status: int | None, entry: str | None) -> str:
    """Why an experiment waits while the API server refuses the operator the watch it needs (of
    `resource`, e.g. jobs.batch), and what to grant; `entry`, the trialKinds entry that grants it."""
    how = f" ({CHART_VALUE}: add {entry})" if entry else ""
    return (
        f"the operator may not watch {resource} in namespace {namespace} ({status or 'refused'}): grant its "
        f"ServiceAccount {', '.join(VERBS[:-1])} and {VERBS[-1]} on {resource} there{how}; the experiment "
        "waits and goes on by itself once the watch is allowed"
    )
