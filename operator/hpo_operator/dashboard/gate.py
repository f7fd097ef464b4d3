"""The dashboard's door: who is asking (auth.py's rules, reviews.py's answers) before any page or
API call is served, and what that user may see once in.

`Gate`, an ASGI middleware, finds the identity of every request (modes `proxy` and `token`;
`none` lets everything through as before) or refuses it: 401 or 403 with the reason, as JSON for
the API and as text for a page, except that in `token` mode a page asked for without a session
is answered (401) with the sign-in page, which posts the token to /api/session and reloads.
/healthz (the kubelet's probes) and /static/ (the pages' own scripts and styles) are open.

`Access` then answers the routes: whether the identity may read a namespace (403 with the reason
if not), which of several namespaces it may read (the list, the event stream and the errors
shown are cut to those), all through one SubjectAccessReview per namespace, cached briefly.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterable
from typing import Any

from starlette.datastructures import Headers
from starlette.requests import ClientDisconnect, Request
from starlette.responses import HTMLResponse, JSONResponse, PlainTextResponse, Response

from .auth import (
    SIGN_IN_BODY_LIMIT,
    AuthSettings,
    Identity,
    Refusal,
    Sessions,
    bearer_token,
    ended_cookie,
    over_tls,
    proxy_identity,
    session_cookie,
    session_of,
    token_expiry,
)
from .guards import same_site_refusal
from .reviews import Reviewer

IDENTITY = "hpo.identity"  # the scope key the identity is kept under for the routes
STILL_VALID = "hpo.still-valid"  # () -> bool: the identity's session or token has not ended since
SESSION_PATH = "/api/session"
OPEN_PATHS = ("/healthz",)
OPEN_PREFIXES = ("/static/",)
SIGN_IN = "sign in: open the dashboard's page in a browser, or send `Authorization: Bearer <token>`"


def _json(status: int, body: dict, headers: dict | None = None) -> JSONResponse:
    return JSONResponse(body, status_code=status, headers={"cache-control": "no-store", **(headers or {})})


class Gate:
    """ASGI middleware: the requesting identity, or the request refused."""

    def __init__(
        self, app: Any, settings: AuthSettings, reviewer: Reviewer | None, sessions: Sessions | None, sign_in: str
    ):
        self.app, self.settings, self.reviewer, self.sessions, self.sign_in = app, settings, reviewer, sessions, sign_in

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        path = scope.get("path", "")
        if scope["type"] != "http" or not self.settings.on or path in OPEN_PATHS or path.startswith(OPEN_PREFIXES):
            return await self.app(scope, receive, send)
        if path == SESSION_PATH and self.settings.mode == "token":
            response = await self.session(Request(scope, receive))
            return await response(scope, receive, send)
        identity = await self.identify(scope)
        if isinstance(identity, Refusal):
            return await self.refuse(scope, identity)(scope, receive, send)
        scope[IDENTITY] = identity
        await self.app(scope, receive, send)

    async def identify(self, scope: dict) -> Identity | Refusal:
        """The request's identity; for a long answer (the event stream), scope[STILL_VALID] says
        whether the session or token it came with has ended since."""
        headers = Headers(scope=scope)
        if self.settings.mode == "proxy":
            peer = (scope.get("client") or (None,))[0]
            return proxy_identity(peer, headers.getlist, self.settings.proxy)
        assert self.reviewer is not None and self.sessions is not None
        token = bearer_token(headers.get("authorization"))
        if token is not None:
            expires = token_expiry(token)
            scope[STILL_VALID] = lambda: expires is None or time.time() < expires
            return await self.reviewer.identity(token)
        sessions, session = self.sessions, session_of(headers.get("cookie"))
        identity = sessions.identity(session)
        scope[STILL_VALID] = lambda: sessions.identity(session) is not None
        return identity if identity is not None else Refusal(401, SIGN_IN)

    def refuse(self, scope: dict, refusal: Refusal) -> Response:
        api = scope["path"].startswith("/api/")
        challenge = {"www-authenticate": 'Bearer realm="hpo-dashboard"'} if refusal.status == 401 else {}
        if api:
            return _json(refusal.status, {"error": refusal.reason}, challenge)
        if self.settings.mode == "token" and refusal.status == 401 and scope.get("method") in ("GET", "HEAD"):
            return HTMLResponse(self.sign_in, status_code=401, headers={"cache-control": "no-store", **challenge})
        return PlainTextResponse(refusal.reason, status_code=refusal.status, headers={"cache-control": "no-store"})

    async def session(self, request: Request) -> Response:
        """POST /api/session {"token": ...}: signs in (a session cookie for the reviewed
        identity); DELETE /api/session signs out. Both only from the page itself (guards.py)."""
        assert self.reviewer is not None and self.sessions is not None
        if request.method not in ("POST", "DELETE"):
            return _json(405, {"error": "POST a token to sign in, DELETE to sign out"}, {"allow": "POST, DELETE"})
        refusal = same_site_refusal(request)
        if refusal is not None:
            return _json(403, {"error": refusal})
        secure = over_tls(request.url.scheme, request.headers.get("x-forwarded-proto"))
        if request.method == "DELETE":
            self.sessions.end(session_of(request.headers.get("cookie")))
            return _json(200, {"signedIn": False}, {"set-cookie": ended_cookie(secure)})
        token = await _token_of(request)
        if isinstance(token, Refusal):
            return _json(token.status, {"error": token.reason})
        identity = await self.reviewer.identity(token)
        if isinstance(identity, Refusal):
            return _json(identity.status, {"error": identity.reason})
        session, max_age = self.sessions.start(identity, token_expiry(token))
        return _json(
            200, {"user": identity.user, "seconds": max_age}, {"set-cookie": session_cookie(session, max_age, secure)}
        )


async def _token_of(request: Request) -> str | Refusal:
    """The token in a sign-in request's JSON body, read no further than SIGN_IN_BODY_LIMIT."""
    body = bytearray()
    try:
        async for chunk in request.stream():
            body += chunk
            if len(body) > SIGN_IN_BODY_LIMIT:
                return Refusal(413, f"a sign-in request is at most {SIGN_IN_BODY_LIMIT} bytes")
    except ClientDisconnect:
        return Refusal(400, "the request was cut")
    try:
        token = json.loads(body).get("token")
    except (ValueError, AttributeError):
        return Refusal(400, 'the body is not JSON of the form {"token": "..."}')
    if not isinstance(token, str) or not token.strip():
        return Refusal(400, "no token given")
    return token.strip()


class Access:
    """What the requesting identity may read; with no identity (mode none), all the dashboard reads."""

    def __init__(self, reviewer: Reviewer | None):
        self.reviewer = reviewer

    @staticmethod
    def identity(request: Request) -> Identity | None:
        return request.scope.get(IDENTITY)

    @staticmethod
    def still_valid(request: Request) -> bool:
        """False once the session (signed out, expired) or token (expired) the request came with
        has ended: an event stream opened with it ends then too."""
        return bool(request.scope.get(STILL_VALID, lambda: True)())

    async def refusal(self, request: Request, namespace: str) -> Refusal | None:
        identity = self.identity(request)
        if identity is None or self.reviewer is None:
            return None
        return await self.reviewer.refusal(identity, namespace)

    async def visible(self, request: Request, namespaces: Iterable[str]) -> set[str] | None:
        """Those of `namespaces` the identity may read; None: no identity, no limit."""
        identity = self.identity(request)
        if identity is None or self.reviewer is None:
            return None
        return await self.reviewer.visible(identity, namespaces)

    async def errors(self, request: Request, feed_errors: list[tuple[str | None, str]]) -> list[str]:
        """The store's errors about namespaces the identity may read (and those about no one
        namespace): another team's namespace is not even named."""
        shown = await self.visible(request, {ns for ns, _ in feed_errors if ns is not None})
        return [text for ns, text in feed_errors if ns is None or shown is None or ns in shown]

    async def event(self, request: Request, message: dict, feed_errors: list[tuple[str | None, str]]) -> dict:
        """An event-stream message as this identity may see it: only its namespaces' experiments
        (an empty list: nothing for it), and only its errors."""
        experiments = message.get("experiments")
        if experiments is not None:
            shown = await self.visible(request, {ns for ns, _ in experiments})
            experiments = [e for e in experiments if shown is None or e[0] in shown]
        return {"experiments": experiments, "errors": await self.errors(request, feed_errors)}
