"""The API server's answers about a user: TokenReview (who a token is) and SubjectAccessReview
(whether that user may list Experiments in a namespace), asked with the dashboard's own
credentials (its ServiceAccount needs `create` on tokenreviews and subjectaccessreviews) and
reused briefly, allowed or not, in bounded caches: a page and its event stream ask again and
again, and the answers follow RBAC changes within `access_seconds`.

At most CONCURRENT reviews are in flight at once, and the same question asked while it is in
flight waits for that answer: a list over many namespaces, opened by many users, is a bounded
load on the API server. A review that fails (the API server down, or the dashboard not allowed to
ask) is refused with why, never taken as allowed, and not cached.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

from kubernetes_asyncio import client
from kubernetes_asyncio.client.exceptions import ApiException

from hpo_operator.kube.client import REQUEST_TIMEOUT, TRANSPORT_ERRORS, api_reason, read_body

from .auth import (
    AuthSettings,
    Identity,
    Refusal,
    access_refusal,
    access_review,
    reviewed_identity,
    token_key,
    token_review,
)
from .lru import Lru

log = logging.getLogger(__name__)

CONCURRENT = 8
ACCESS_ENTRIES = 20_000  # (identity, namespace) answers
TOKEN_ENTRIES = 2_000
EVERY_NAMESPACE = ""  # a review at cluster scope: a ClusterRoleBinding's grant covers every namespace

Ask = Callable[[str, dict], Awaitable[dict]]  # (kind, body) -> the API server's answer


def api_asker(api: Any) -> Ask:
    """Posts a review with the dashboard's API client and returns the answer's JSON."""

    async def ask(kind: str, body: dict) -> dict:
        if kind == "tokenreviews":
            call = client.AuthenticationV1Api(api).create_token_review
        else:
            call = client.AuthorizationV1Api(api).create_subject_access_review
        response = await call(body, _preload_content=False, _request_timeout=REQUEST_TIMEOUT)
        return json.loads(await read_body(response))

    return ask


def _failure(what: str, e: BaseException) -> Refusal:
    if isinstance(e, ApiException):
        why = api_reason(e) if e.status in (401, 403) else f"{e.status} {e.reason}"
        return Refusal(503, f"the dashboard cannot {what}: {why}")
    return Refusal(503, f"the dashboard cannot {what}: the API server did not answer ({type(e).__name__})")


class Reviewer:
    def __init__(self, ask: Ask, settings: AuthSettings):
        self.ask = ask
        self.access: Lru[tuple[Identity, str], Refusal | bool] = Lru(ACCESS_ENTRIES, ttl=settings.access_seconds)
        self.tokens: Lru[bytes, Identity | Refusal] = Lru(TOKEN_ENTRIES, ttl=settings.review_seconds)
        self._pending: dict[Any, asyncio.Task] = {}
        self._slots = asyncio.Semaphore(CONCURRENT)

    async def _once(self, key: Any, cache: Lru, question: Callable[[], Awaitable[Any]]) -> Any:
        """The cached answer, else the one in flight, else a new one (cached unless it failed).
        The question runs in a task of its own: a request that goes away (its client gone) does
        not take the answer away from the others waiting for it."""
        cached = cache.get(key)
        if cached is not None:
            return cached
        task = self._pending.get(key)
        if task is None:
            task = asyncio.create_task(self._ask(key, cache, question))
            self._pending[key] = task
            task.add_done_callback(lambda done: self._done(key, done))
        return await asyncio.shield(task)

    async def _ask(self, key: Any, cache: Lru, question: Callable[[], Awaitable[Any]]) -> Any:
        async with self._slots:
            answer, keep = await question()
        if keep:
            cache.put(key, answer)
        return answer

    def _done(self, key: Any, task: asyncio.Task) -> None:
        self._pending.pop(key, None)
        if not task.cancelled():
            task.exception()  # retrieved, even if every request that asked has gone

    async def identity(self, token: str) -> Identity | Refusal:
        """Who the token is, as the API server says (TokenReview)."""

        async def question() -> tuple[Identity | Refusal, bool]:
            try:
                review = await self.ask("tokenreviews", token_review(token))
            except (ApiException, *TRANSPORT_ERRORS) as e:
                return _failure("review tokens", e), False
            return reviewed_identity(review), True

        return await self._once(("token", token_key(token)), self.tokens, question)

    async def refusal(self, identity: Identity, namespace: str) -> Refusal | None:
        """None if `identity` may list Experiments in `namespace`, else why not (403, or 503 when
        the API server could not be asked)."""

        async def question() -> tuple[Refusal | bool, bool]:
            try:
                review = await self.ask("subjectaccessreviews", access_review(identity, namespace))
            except (ApiException, *TRANSPORT_ERRORS) as e:
                return _failure("check access", e), False
            return access_refusal(identity, namespace, review) or True, True

        answer = await self._once((identity, namespace), self.access, question)
        return None if answer is True else answer

    async def visible(self, identity: Identity, namespaces: Iterable[str]) -> set[str]:
        """Those of `namespaces` that `identity` may list Experiments in: all of them if a
        cluster-wide grant says so (one review), else each namespace's own review."""
        wanted = set(namespaces)
        if not wanted or await self.refusal(identity, EVERY_NAMESPACE) is None:
            return wanted
        names = sorted(wanted)
        answers = await asyncio.gather(*(self.refusal(identity, ns) for ns in names))
        return {ns for ns, refused in zip(names, answers, strict=True) if refused is None}
