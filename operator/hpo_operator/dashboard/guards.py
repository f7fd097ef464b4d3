"""Who may ask the dashboard what: the Host names it answers to, the headers on every answer, and
the checks a write request must pass.

Every user-controlled string is rendered by the pages as text (textContent, never innerHTML), and
escaped for plotly; the Content-Security-Policy allows scripts from this server only (no inline
script, so injected markup could not run any); requests must name an allowed Host (a page on
another site cannot reach a loopback server by rebinding its DNS name); writes need
--allow-write, a JSON body and a custom header (which a cross-site form or fetch cannot send
without a preflight this server never grants). Who is asking, and what they may read, is gate.py's.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from starlette.datastructures import Headers, MutableHeaders
from starlette.requests import Request
from starlette.responses import PlainTextResponse

from .auth import AuthSettings

WRITE_HEADER = "X-HPO-Dashboard"
LOOPBACK_NAMES = ("localhost", "127.0.0.1", "::1")
CSP = (
    "default-src 'self'; script-src 'self' 'unsafe-eval'; style-src 'self' 'unsafe-inline'; "
    "img-src 'self' data: blob:; connect-src 'self'; object-src 'none'; base-uri 'none'; "
    "form-action 'none'; frame-ancestors 'none'"
)
# plotly.js compiles its WebGL shaders (parcoords, scattergl) with `new Function`: 'unsafe-eval'.
# It allows no inline script or event-handler attribute: injected markup still could not run.
SECURITY_HEADERS = {
    "content-security-policy": CSP,
    "x-content-type-options": "nosniff",
    "x-frame-options": "DENY",
    "referrer-policy": "no-referrer",
    "cross-origin-opener-policy": "same-origin",
    "cross-origin-resource-policy": "same-origin",
}


@dataclass
class Options:
    """What the dashboard serves, where, and to whom."""

    address: str = "127.0.0.1"
    port: int = 8080
    namespaces: list[str] | None = None  # None: every namespace
    allow_write: bool = False
    allowed_hosts: list[str] | None = None  # more Host names than loopback's and the address, see hosts()
    context: str | None = None
    auth: AuthSettings = field(default_factory=AuthSettings)  # who is asking (auth.py); none: nobody is asked

    def hosts(self) -> set[str] | None:
        """The Host names requests may use: the loopback names, the address, and the allowed
        hosts given; None accepts any ('*', or a wildcard address with no names given)."""
        given = [h.lower() for h in self.allowed_hosts or []]
        wildcard = self.address in ("0.0.0.0", "::", "")
        if "*" in given or (wildcard and not given):
            return None
        return {*LOOPBACK_NAMES, *given} | (set() if wildcard else {self.address.lower()})


def is_loopback(address: str) -> bool:
    if address == "localhost":
        return True
    try:
        return ipaddress.ip_address(address).is_loopback
    except ValueError:
        return False


def hostname(host: str) -> str:
    """The name in a Host header (or an origin without its scheme): no port, no IPv6 brackets."""
    host = host.strip().lower()
    if host.startswith("["):
        return host[1 : host.find("]")] if "]" in host else host
    return host.rsplit(":", 1)[0] if host.count(":") == 1 else host


class Guard:
    """ASGI middleware: refuses unknown Host names, adds the security headers to every answer."""

    def __init__(self, app: Any, hosts: set[str] | None):
        self.app, self.hosts = app, hosts

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        host = Headers(scope=scope).get("host", "")
        # /healthz says nothing: the kubelet's probes, which name the pod's IP, may use it.
        if self.hosts is not None and hostname(host) not in self.hosts and scope["path"] != "/healthz":
            response = PlainTextResponse(
                f"unknown host {host!r}: this dashboard answers to "
                f"{', '.join(sorted(self.hosts))} (kubectl hpo dashboard --allowed-host)",
                status_code=421,
            )
            return await response(scope, receive, send)

        async def send_secured(message: dict) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                for name, value in SECURITY_HEADERS.items():
                    headers.setdefault(name, value)
            await send(message)

        await self.app(scope, receive, send_secured)


def same_site_refusal(request: Request) -> str | None:
    """Why a request that changes something is refused (with 403), or None: it lacks the custom
    header or the JSON body, or it comes from another origin: what the page itself sends, and a
    page of another site cannot."""
    if request.headers.get(WRITE_HEADER) != "1" or not request.headers.get("content-type", "").startswith(
        "application/json"
    ):
        return f"a write request needs the header {WRITE_HEADER}: 1 and a JSON body"
    origin = request.headers.get("origin")
    if origin and hostname(origin.split("://", 1)[-1]) != hostname(request.headers.get("host", "")):
        return f"a write request from another origin ({origin}) is refused"
    return None


def write_refusal(request: Request, writable: bool) -> str | None:
    """Why a write request is refused (with 403), or None: the dashboard is read-only (`writable`
    false), or the request is not the page's own (same_site_refusal)."""
    if not writable:
        return (
            "this dashboard is read-only: start it with `kubectl hpo dashboard --allow-write` "
            "to stop, resume and restart from the page"
        )
    return same_site_refusal(request)
