"""Whose rights a trial's workload is created with, when the operator serves a shared cluster.

With tenancy on (the chart's default), before the operator creates a trial's workload (its pod, Job
or resource, and its checkpoint claim) it asks the API server whether the trial's author may create
that kind in that namespace (a LocalSubjectAccessReview), and it then creates, deletes and reads the
workload impersonating the ServiceAccount the platform names for every namespace
(HPO_TRIAL_SERVICE_ACCOUNT), so that the API server also enforces that account's RBAC, and admission
(Pod Security, policies, quotas) and the audit log see it, not the operator. Nothing is created with
more rights than its author has, nor than the platform gave the namespace.

The author is the API server's word, recorded by the admission webhook (core/authorship.py) and
signed with the key in HPO_AUTHOR_KEY_FILE. Answers are cached briefly (a round of a hundred new
trials asks once), and asks for the same answer at once share one request.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

from hpo_operator.api.vocabulary import L_LAUNCH, LaunchReason
from hpo_operator.core.authorship import Author, Unverified, trial_author
from hpo_operator.kube.client import KubeClient, Resource

log = logging.getLogger(__name__)

# How long an answer counts: a granted right for ALLOWED_SECONDS, a refusal for DENIED_SECONDS (a
# RoleBinding made after a refusal takes effect soon). At most CACHE_SIZE answers are kept.
ALLOWED_SECONDS = 30.0
DENIED_SECONDS = 5.0
CACHE_SIZE = 4096


@dataclass(frozen=True)
class Tenancy:
    """The operator's tenancy settings (the chart sets them): the key that signs authors (None:
    no author check) and the ServiceAccount impersonated in each namespace (None: the operator's
    own identity)."""

    key: bytes | None = None
    service_account: str | None = None

    @classmethod
    def from_env(cls) -> Tenancy:
        key_file = os.environ.get("HPO_AUTHOR_KEY_FILE")
        key = Path(key_file).read_bytes().strip() if key_file else None
        if key_file and not key:
            raise ValueError(f"HPO_AUTHOR_KEY_FILE {key_file} is empty")
        return cls(key, os.environ.get("HPO_TRIAL_SERVICE_ACCOUNT") or None)

    @property
    def on(self) -> bool:
        return self.key is not None or self.service_account is not None

    def acting_user(self, namespace: str) -> str | None:
        """The user a namespace's workloads are written and read as (None: the operator itself)."""
        if self.service_account is None:
            return None
        return f"system:serviceaccount:{namespace}:{self.service_account}"


@dataclass(frozen=True)
class Refusal:
    """Why a trial's workload is not created: a trial status reason and its message."""

    reason: str
    message: str


def resource_word(resource: Resource) -> str:
    """A resource as kubectl names it: pods, jobs.batch."""
    group, _, plural = resource
    return f"{plural}.{group}" if group else plural


class Authority:
    """The author checks of one operator process (one cache for every namespace)."""

    def __init__(self, api: KubeClient, tenancy: Tenancy):
        self.api = api
        self.tenancy = tenancy
        self.answers: OrderedDict[tuple, tuple[float, str | None]] = OrderedDict()
        self.asking: dict[tuple, asyncio.Future[str | None]] = {}

    def acting_user(self, namespace: str) -> str | None:
        return self.tenancy.acting_user(namespace)

    async def refusal(self, namespace: str, experiment: dict, trial: dict, resources: list[Resource]) -> Refusal | None:
        """Why the trial's workload (made of `resources`) may not be created for its author, or None
        when it may (or no author check is configured). API errors are raised: the round fails and
        asks again, rather than refusing a trial for an outage."""
        key = self.tenancy.key
        if key is None:
            return None
        meta = trial.get("metadata") or {}
        # A Trial a user made, and a restart's re-run, are for whoever asked, never the experiment's
        # author; retries keep the author of what they retry (planner: RoundState.rerun).
        launch = (meta.get("labels") or {}).get(L_LAUNCH)
        try:
            author = trial_author(
                meta.get("annotations") or {},
                (experiment.get("metadata") or {}).get("annotations") or {},
                namespace,
                key,
                own=launch in (LaunchReason.user, LaunchReason.restart),
            )
        except Unverified as e:
            return Refusal("AuthorUnknown", f"no verified author, so nothing is created for this trial: {e}")
        for resource in resources:
            denied = await self.denied(author, namespace, resource)
            if denied is not None:
                return Refusal(
                    "Forbidden",
                    f"{author.username} may not create {resource_word(resource)} in namespace {namespace}, so the "
                    f"operator does not create them for its trials{': ' + denied if denied else ''}",
                )
        return None

    async def denied(self, author: Author, namespace: str, resource: Resource) -> str | None:
        """None if `author` may create `resource` in `namespace`; else the API server's reason ("" if
        it gave none)."""
        cache_key = (author.to_json(), namespace, resource)
        now = time.monotonic()
        hit = self.answers.get(cache_key)
        if hit is not None and hit[0] > now:
            self.answers.move_to_end(cache_key)
            return hit[1]
        pending = self.asking.get(cache_key)
        if pending is not None:
            return await asyncio.shield(pending)
        future: asyncio.Future[str | None] = asyncio.get_running_loop().create_future()
        self.asking[cache_key] = future
        try:
            answer = await self._ask(author, namespace, resource)
        except BaseException as e:
            future.set_exception(e)
            future.exception()  # retrieved: a caller may not be waiting
            raise
        else:
            future.set_result(answer)
        finally:
            del self.asking[cache_key]
        ttl = ALLOWED_SECONDS if answer is None else DENIED_SECONDS
        self.answers[cache_key] = (time.monotonic() + ttl, answer)
        self.answers.move_to_end(cache_key)
        while len(self.answers) > CACHE_SIZE:
            self.answers.popitem(last=False)
        return answer

    async def _ask(self, author: Author, namespace: str, resource: Resource) -> str | None:
        group, _, plural = resource
        status = await self.api.local_access_review(
            namespace,
            {**author.user_info(), "resourceAttributes": {"verb": "create", "group": group, "resource": plural}},
        )
        if status.get("allowed") and not status.get("denied"):
            return None
        return str(status.get("reason") or status.get("evaluationError") or "")
