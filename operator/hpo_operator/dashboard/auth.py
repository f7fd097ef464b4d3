"""Who is asking, decided without I/O: the dashboard's authentication modes and their rules.

- `none`: nobody is asked who they are; the dashboard shows what its own credentials read. For
  `kubectl hpo dashboard` (the user's own kubeconfig, on loopback) or a port-forward.
- `proxy`: an authenticating proxy in front (oauth2-proxy, kube-rbac-proxy, the aggregation
  layer) names the user and their groups in request headers. Those headers are believed only on
  requests whose TCP peer is one of the configured sources: anyone else could write them.
- `token`: the user's own bearer token, reviewed by the API server (TokenReview, in reviews.py).
  API clients send `Authorization: Bearer`; a browser signs in once on a small page that posts
  the token and gets a session cookie (a browser's EventSource cannot send an Authorization
  header). The token itself is never stored, logged or echoed: the cache of reviews is keyed by
  its SHA-256, a session maps a random id to the reviewed identity.

What each identity may see is then a SubjectAccessReview per namespace (reviews.py), with the
identity's user, groups, uid and extra exactly as decided here.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import ipaddress
import json
import secrets
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from http.cookies import CookieError, SimpleCookie

from hpo_operator.api.vocabulary import GROUP

from .lru import Lru

MODES = ("none", "proxy", "token")
AUTHENTICATED = "system:authenticated"  # the group the API server gives every user it authenticates
SESSION_COOKIE = "hpo-dashboard-session"
MAX_SESSIONS = 10_000
SIGN_IN_BODY_LIMIT = 64 * 1024  # a token is a few KiB; the sign-in request is read no further

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


@dataclass(frozen=True)
class Identity:
    """A user as the API server knows them: what a SubjectAccessReview is asked about."""

    user: str
    groups: tuple[str, ...] = ()
    uid: str = ""
    extra: tuple[tuple[str, tuple[str, ...]], ...] = ()


@dataclass(frozen=True)
class Refusal:
    """Why a request is not answered: its HTTP status and a reason for the user."""

    status: int
    reason: str


@dataclass
class ProxySettings:
    """Where an authenticating proxy's requests come from and the headers it names the user in."""

    trusted: tuple[Network, ...] = ()
    user_header: str = "X-Remote-User"
    group_header: str = "X-Remote-Group"
    group_separator: str = ","  # "" takes each header line as one group, as the aggregation layer sends them
    user_prefix: str = ""  # what the API server puts before the names (its --oidc-username-prefix)
    group_prefix: str = ""


@dataclass
class AuthSettings:
    mode: str = "none"
    proxy: ProxySettings = field(default_factory=ProxySettings)
    session_seconds: float = 8 * 3600  # a browser's sign-in; never past the token's own expiry
    access_seconds: float = 20.0  # how long a SubjectAccessReview's answer is reused, allowed or not
    review_seconds: float = 10.0  # how long a TokenReview's answer is reused (API clients send one per request)

    @property
    def on(self) -> bool:
        return self.mode != "none"


# --- proxy ------------------------------------------------------------------------------------------


def parse_sources(values: Iterable[str]) -> tuple[Network, ...]:
    """Addresses or CIDRs ("10.0.3.7", "10.0.0.0/16", "fd00::/8"); ValueError names a bad one."""
    networks = []
    for value in values:
        try:
            networks.append(ipaddress.ip_network(value.strip(), strict=False))
        except ValueError:
            raise ValueError(f"not an address or CIDR: {value!r}") from None
    return tuple(networks)


def is_trusted(address: str | None, networks: Sequence[Network]) -> bool:
    """Whether a request's TCP peer is one of the trusted sources (an IPv4 peer seen as an
    IPv4-mapped IPv6 address counts as itself). A peer that is no IP address (a Unix socket) is not."""
    if not address:
        return False
    try:
        ip = ipaddress.ip_address(address.split("%", 1)[0])
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return any(ip.version == n.version and ip in n for n in networks)


def _text(value: str) -> str:
    """A header value as the proxy meant it: HTTP carries bytes, read as Latin-1; names are UTF-8."""
    try:
        return value.encode("latin-1").decode("utf-8").strip()
    except UnicodeError:
        return value.strip()


def proxy_identity(
    peer: str | None, getlist: Callable[[str], list[str]], settings: ProxySettings
) -> Identity | Refusal:
    """The user a trusted proxy names, or why not. `getlist(name)`: a header's values, each line."""
    if not is_trusted(peer, settings.trusted):
        return Refusal(
            403,
            "this dashboard answers only through its authenticating proxy: requests from "
            f"{peer or 'an unknown address'} are refused (the proxy's addresses are set by --trusted-proxy, "
            "the chart's dashboard.auth.proxy.trustedSources)",
        )
    users = [u for u in (_text(v) for v in getlist(settings.user_header)) if u]
    if not users:
        return Refusal(401, f"the authenticating proxy named no user: its request has no {settings.user_header} header")
    if len(set(users)) > 1:
        return Refusal(401, f"the authenticating proxy sent {len(users)} different {settings.user_header} headers")
    groups: list[str] = []
    for line in getlist(settings.group_header):
        parts = _text(line).split(settings.group_separator) if settings.group_separator else [_text(line)]
        groups.extend(settings.group_prefix + g.strip() for g in parts if g.strip())
    if AUTHENTICATED not in groups:
        groups.append(AUTHENTICATED)
    return Identity(settings.user_prefix + users[0], tuple(dict.fromkeys(groups)))


# --- tokens -----------------------------------------------------------------------------------------


def bearer_token(authorization: str | None) -> str | None:
    """The token of an `Authorization: Bearer <token>` header, else None."""
    if not authorization:
        return None
    scheme, _, token = authorization.strip().partition(" ")
    token = token.strip()
    return token if scheme.lower() == "bearer" and token else None


def token_key(token: str) -> bytes:
    """What a token's review is cached under: its digest, never the token."""
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).digest()


def token_review(token: str) -> dict:
    return {"apiVersion": "authentication.k8s.io/v1", "kind": "TokenReview", "spec": {"token": token}}


def reviewed_identity(review: dict) -> Identity | Refusal:
    """The identity in a TokenReview's answer, or 401. The answer's spec (which holds the token)
    is never read, and the API server's error is not repeated (it can quote the credential)."""
    status = review.get("status") or {}
    user = status.get("user") or {}
    if not status.get("authenticated") or not user.get("username"):
        return Refusal(401, "the API server does not accept this token (expired, revoked, or not one of its own)")
    extra = tuple(sorted((str(k), tuple(str(x) for x in v or ())) for k, v in (user.get("extra") or {}).items()))
    return Identity(
        str(user["username"]), tuple(str(g) for g in user.get("groups") or ()), str(user.get("uid") or ""), extra
    )


def token_expiry(token: str) -> float | None:
    """A JWT's `exp` (seconds since the epoch), read once the API server has accepted the token,
    so that a session never outlives it; None for a token that is no JWT or says no expiry."""
    parts = token.split(".")
    if len(parts) != 3:
        return None
    try:
        payload = json.loads(base64.urlsafe_b64decode(parts[1] + "=" * (-len(parts[1]) % 4)))
    except (binascii.Error, ValueError, UnicodeError):
        return None
    exp = payload.get("exp") if isinstance(payload, dict) else None
    return float(exp) if isinstance(exp, int | float) and not isinstance(exp, bool) else None


# --- sessions (a browser's sign-in) ------------------------------------------------------------


class Sessions:
    """Session ids (random, 256 bits) to reviewed identities, each until its expiry; at most
    MAX_SESSIONS, the least recently used dropped first."""

    def __init__(self, seconds: float, clock: Callable[[], float] = time.time, limit: int = MAX_SESSIONS):
        self.seconds, self.clock = seconds, clock
        self._ids: Lru[str, Identity] = Lru(limit, clock=clock)

    def start(self, identity: Identity, token_expires: float | None = None) -> tuple[str, int]:
        """A new session: its id and its lifetime in seconds (for the cookie's Max-Age)."""
        now = self.clock()
        expires = now + self.seconds if token_expires is None else min(now + self.seconds, token_expires)
        session = secrets.token_urlsafe(32)
        self._ids.put(session, identity, expires=expires)
        return session, max(0, int(expires - now))

    def identity(self, session: str | None) -> Identity | None:
        return self._ids.get(session) if session else None

    def end(self, session: str | None) -> None:
        if session:
            self._ids.pop(session)

    def __len__(self) -> int:
        return len(self._ids)


def session_of(cookie_header: str | None) -> str | None:
    """The session id in a Cookie header, else None."""
    if not cookie_header:
        return None
    jar: SimpleCookie = SimpleCookie()
    try:
        jar.load(cookie_header)
    except CookieError:
        return None
    morsel = jar.get(SESSION_COOKIE)
    return morsel.value if morsel is not None and morsel.value else None


def session_cookie(session: str, max_age: int, secure: bool) -> str:
    """Set-Cookie for a session: not readable by scripts, not sent by other sites' requests
    (SameSite=Strict), and over TLS only when the page was reached over TLS."""
    return f"{SESSION_COOKIE}={session}; Max-Age={max_age}; Path=/; HttpOnly; SameSite=Strict" + (
        "; Secure" if secure else ""
    )


def ended_cookie(secure: bool) -> str:
    return session_cookie("", 0, secure)


def over_tls(scheme: str, forwarded_proto: str | None) -> bool:
    """Whether the browser reached the page over TLS: directly, or through a proxy or Ingress
    that says so (a false claim only costs its sender their own cookie's Secure flag)."""
    return scheme == "https" or (forwarded_proto or "").split(",")[0].strip().lower() == "https"


# --- access to a namespace ------------------------------------------------------------------------


def access_review(identity: Identity, namespace: str) -> dict:
    """A SubjectAccessReview: may `identity` list Experiments in `namespace` ("" : in every one)."""
    spec: dict = {
        "user": identity.user,
        "groups": list(identity.groups),
        "resourceAttributes": {"namespace": namespace, "verb": "list", "group": GROUP, "resource": "experiments"},
    }
    if identity.uid:
        spec["uid"] = identity.uid
    if identity.extra:
        spec["extra"] = {k: list(v) for k, v in identity.extra}
    return {"apiVersion": "authorization.k8s.io/v1", "kind": "SubjectAccessReview", "spec": spec}


def access_refusal(identity: Identity, namespace: str, review: dict) -> Refusal | None:
    """None if the review allows it, else 403 with why."""
    status = review.get("status") or {}
    if status.get("allowed") and not status.get("denied"):
        return None
    why = str(status.get("reason") or status.get("evaluationError") or "")[:500]
    return Refusal(
        403,
        f"{identity.user} may not list experiments.{GROUP} in namespace {namespace}" + (f": {why}" if why else ""),
    )
