"""Experiments from typed Python values, for notebooks: experiment_spec(), which builds the API's
own ExperimentSpec model from the search space's parameters (space.py: double(), integer(),
categorical(), discrete()). Pure: nothing here calls the API server (notebook.py creates what
this builds), so a mistake is reported before anything is created.

    from hpo_operator import client as hpo
    spec = hpo.experiment_spec(
        {"lr": hpo.double(1e-4, 1e-1, log=True), "layers": hpo.integer(1, 4)},
        objective="loss",
        image="trainer:1",
        command=["python3", "train.py", "--lr=${params.lr}", "--layers=${params.layers}"],
        max_trials=20,
        parallel=4,
    )
"""

from __future__ import annotations

import copy
import re
from collections.abc import Mapping, Sequence
from typing import Any

from hpo_operator.api.spec import (
    EXPERIMENT_NAME_MAX_LENGTH,
    Algorithm,
    AlgorithmSetting,
    EarlyStopping,
    ExperimentSpec,
    MetricsCollector,
    Objective,
    RetryPolicy,
)
from hpo_operator.api.template import TrialTemplate
from hpo_operator.api.vocabulary import (
    API_VERSION,
    AlgorithmName,
    MetricsSource,
    ObjectiveType,
    RetryableFailureClass,
)

from .errors import InvalidInput, validated
from .space import Space

# Kubernetes' extended resource for a GPU, for resources={"gpu": 1}.
GPU_RESOURCE = "nvidia.com/gpu"
# What Pod Security's `restricted` level (which a namespace may enforce, with the label
# pod-security.kubernetes.io/enforce) asks of every pod and container: the client's trial pods
# carry it, so that they are admitted there too. The user is nobody (65534): runAsNonRoot alone
# would stop an image that runs as root, as most Python images do. A pod's or container's own
# securityContext (pod=..., extra=...) wins field by field.
RESTRICTED_POD_SECURITY: dict[str, Any] = {
    "runAsNonRoot": True,
    "runAsUser": 65534,
    "runAsGroup": 65534,
    "seccompProfile": {"type": "RuntimeDefault"},
}
RESTRICTED_CONTAINER_SECURITY: dict[str, Any] = {
    "allowPrivilegeEscalation": False,
    "capabilities": {"drop": ["ALL"]},
}
_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")


def _choice(what: str, value: str, allowed: type[Any]) -> str:
    words = [str(v.value) for v in allowed]
    if value not in words:
        raise InvalidInput(f"invalid {what} {value!r}: use one of {', '.join(words)}")
    return value


def _setting_text(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def container_resources(resources: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """A container's resources from `{"cpu": "1", "memory": "1Gi", "gpu": 1}` (requests equal to
    limits, "gpu" meaning nvidia.com/gpu), or Kubernetes' own `{"requests": …, "limits": …}`."""
    if not resources:
        return None
    if set(resources) <= {"requests", "limits"}:
        return {k: {n: str(v) for n, v in dict(q).items()} for k, q in resources.items()}
    amounts = {GPU_RESOURCE if name == "gpu" else name: str(value) for name, value in resources.items()}
    return {"requests": dict(amounts), "limits": dict(amounts)}


def container(
    image: str,
    *,
    name: str = "trial",
    command: Sequence[str] | None = None,
    args: Sequence[str] | None = None,
    env: Mapping[str, str] | None = None,
    resources: Mapping[str, Any] | None = None,
    image_pull_policy: str | None = None,
    extra: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """A trial container (a Kubernetes Container as a dict), with the `restricted` level's
    securityContext; `extra` adds fields of its own (a securityContext in it: over that one)."""
    if not isinstance(image, str) or not image.strip():
        raise InvalidInput("give the trial's image")
    body: dict[str, Any] = {"name": name, "image": image}
    if command is not None:
        body["command"] = [str(c) for c in command]
    if args is not None:
        body["args"] = [str(a) for a in args]
    if env:
        body["env"] = [{"name": k, "value": str(v)} for k, v in env.items()]
    if image_pull_policy:
        body["imagePullPolicy"] = image_pull_policy
    res = container_resources(resources)
    if res:
        body["resources"] = res
    body["securityContext"] = copy.deepcopy(RESTRICTED_CONTAINER_SECURITY)
    body.update(_over_security_context(body["securityContext"], extra))
    return body


def _over_security_context(default: dict[str, Any], extra: Mapping[str, Any] | None) -> dict[str, Any]:
    """extra, its securityContext (when a mapping) laid over the default field by field."""
    fields = dict(extra or {})
    given = fields.get("securityContext")
    if isinstance(given, Mapping):
        fields["securityContext"] = {**default, **given}
    return fields


def pod_template(
    containers: Sequence[Mapping[str, Any]],
    *,
    node_selector: Mapping[str, str] | None = None,
    tolerations: Sequence[Mapping[str, Any]] | None = None,
    volumes: Sequence[Mapping[str, Any]] | None = None,
    labels: Mapping[str, str] | None = None,
    extra: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """A trial pod template: these containers, and where they may run. It carries the `restricted`
    level's securityContext (over which a securityContext in `extra` is laid) and mounts no
    ServiceAccount token (the operator's default for any trial pod, said here too)."""
    spec: dict[str, Any] = {
        "containers": [dict(c) for c in containers],
        "securityContext": copy.deepcopy(RESTRICTED_POD_SECURITY),
        "automountServiceAccountToken": False,
    }
    if node_selector:
        spec["nodeSelector"] = dict(node_selector)
    if tolerations:
        spec["tolerations"] = [dict(t) for t in tolerations]
    if volumes:
        spec["volumes"] = [dict(v) for v in volumes]
    spec.update(_over_security_context(spec["securityContext"], extra))
    template: dict[str, Any] = {"spec": spec}
    if labels:
        template["metadata"] = {"labels": dict(labels)}
    return template


def experiment_spec(
    parameters: Mapping[str, Space],
    *,
    objective: str,
    direction: str = "minimize",
    goal: float | None = None,
    additional_metrics: Sequence[str] = (),
    image: str | None = None,
    command: Sequence[str] | None = None,
    args: Sequence[str] | None = None,
    env: Mapping[str, str] | None = None,
    resources: Mapping[str, Any] | None = None,
    image_pull_policy: str | None = None,
    node_selector: Mapping[str, str] | None = None,
    tolerations: Sequence[Mapping[str, Any]] | None = None,
    pod: Mapping[str, Any] | None = None,
    trial_template: TrialTemplate | None = None,
    max_trials: int = 10,
    parallel: int = 1,
    max_failed_trials: int | None = None,
    retries: int | None = None,
    retry_on: Sequence[str] | None = None,
    max_trial_seconds: int | None = None,
    algorithm: str = "random",
    seed: int | None = None,
    algorithm_settings: Mapping[str, object] | None = None,
    metrics_source: str = "Auto",
    early_stopping: EarlyStopping | None = None,
) -> ExperimentSpec:
    """An ExperimentSpec (the API's model) from typed values.

    parameters: {name: double()/integer()/categorical()/discrete()}; the trial sees each as
    ${params.NAME} in its command, args and env. objective/direction: the metric the trials report
    and whether it is minimised or maximised (goal: stop once a trial reaches it). The trial is a
    pod of one container (image, command, args, env, resources as {"cpu": "1", "memory": "1Gi"},
    image_pull_policy; node_selector, tolerations and `pod`, more fields of its pod spec), or a
    whole `trial_template` (a Job, a resource: the API's TrialTemplate). The pod passes Pod
    Security's `restricted` level: it runs as user 65534, without privilege escalation or
    capabilities, under the runtime's seccomp profile, and mounts no ServiceAccount token
    (pod={"securityContext": {"runAsUser": 1000}} changes a field of it). retries: how often a
    failed configuration runs again (default: the API's, 2 on Infrastructure and OOMKilled);
    retry_on: which failure classes. metrics_source: Auto, StdoutLog or TerminationMessage.
    Raises InvalidInput naming what is wrong.
    """
    if not parameters:
        raise InvalidInput("give at least one parameter, e.g. {'lr': double(1e-4, 1e-1, log=True)}")
    params = []
    for name, space in parameters.items():
        if not isinstance(space, Space):
            raise InvalidInput(
                f"parameter {name}: give double(), integer(), categorical() or discrete(), not {space!r}"
            )
        params.append(space.parameter(name))
    if trial_template is None:
        if image is None:
            raise InvalidInput("give the trial's image (or a whole trial_template)")
        box = container(
            image, command=command, args=args, env=env, resources=resources, image_pull_policy=image_pull_policy
        )
        template = pod_template([box], node_selector=node_selector, tolerations=tolerations, extra=pod)
        trial_template = validated(TrialTemplate, "the trial template", template=template)
    elif any(v is not None for v in (image, command, args, env, resources, node_selector, tolerations, pod)):
        raise InvalidInput("give either a trial_template or the trial's image and its settings, not both")
    for what, count in (("max_trials", max_trials), ("parallel", parallel)):
        if isinstance(count, bool) or not isinstance(count, int) or count < 1:
            raise InvalidInput(f"{what} must be a whole number of at least 1, not {count!r}")
    if parallel > max_trials:
        raise InvalidInput(f"parallel ({parallel}) must not exceed max_trials ({max_trials})")
    retry: dict[str, Any] = {}
    if retries is not None:
        retry["max_retries"] = retries
    if retry_on is not None:
        retry["retry_on"] = [_choice("retry_on class", c, RetryableFailureClass) for c in retry_on]
    settings = [AlgorithmSetting(name=k, value=_setting_text(v)) for k, v in (algorithm_settings or {}).items()]
    return validated(
        ExperimentSpec,
        "the experiment",
        objective=validated(
            Objective,
            "the objective",
            type=_choice("direction", direction, ObjectiveType),
            metric_name=objective,
            goal=goal,
            additional_metric_names=list(additional_metrics) or None,
        ),
        algorithm=validated(
            Algorithm,
            "the algorithm",
            name=_choice("algorithm", algorithm, AlgorithmName),
            seed=seed,
            settings=settings or None,
        ),
        parameters=params,
        parallel_trial_count=parallel,
        max_trial_count=max_trials,
        max_failed_trial_count=max_failed_trials,
        retry_policy=validated(RetryPolicy, "the retry policy", **retry),
        max_trial_duration_seconds=max_trial_seconds,
        metrics_collector=validated(
            MetricsCollector, "the metrics collector", source=_choice("metrics_source", metrics_source, MetricsSource)
        ),
        early_stopping=early_stopping,
        trial_template=trial_template,
    )


def experiment_manifest(
    name: str, spec: ExperimentSpec, *, namespace: str | None = None, labels: Mapping[str, str] | None = None
) -> dict[str, Any]:
    """The Experiment object of `spec`; a name ending in "-" is a prefix the API server completes."""
    prefix = name.endswith("-")
    bare = name.rstrip("-") if prefix else name
    limit = EXPERIMENT_NAME_MAX_LENGTH - 5 if prefix else EXPERIMENT_NAME_MAX_LENGTH
    if not _DNS_LABEL.match(bare) or len(name) > limit:
        raise InvalidInput(
            f"invalid experiment name {name!r}: lower-case letters, digits and '-', at most {limit} characters"
        )
    meta: dict[str, Any] = {"generateName": name} if prefix else {"name": name}
    if namespace:
        meta["namespace"] = namespace
    if labels:
        meta["labels"] = dict(labels)
    return {"apiVersion": API_VERSION, "kind": "Experiment", "metadata": meta, "spec": spec.dump()}
