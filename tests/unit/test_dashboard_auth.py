"""The dashboard's decisions about who is asking and what they may read, without a cluster:
trusted sources, the proxy's headers, bearer tokens and their reviews' answers, sessions and
their cookies, the access reviews asked and their caches (answers stood in for the API server's,
which tests/integration/test_dashboard.py asks for real), and the bounded LRU they all use."""

from __future__ import annotations

import asyncio
import base64
import json

import pytest

from hpo_operator.dashboard import auth, reviews
from hpo_operator.dashboard.auth import Identity, Refusal
from hpo_operator.dashboard.lru import Lru
from tests.support.dashboard_objects import ReviewAnswers


class Clock:
    def __init__(self, now: float = 1000.0):
        self.now = now

    def __call__(self) -> float:
        return self.now


def headers(pairs: list[tuple[str, str]]):
    """`getlist` over header lines, case-insensitive as HTTP's names are."""
    return lambda name: [v for k, v in pairs if k.lower() == name.lower()]


# --- trusted sources ---------------------------------------------------------------------------------


def test_trusted_sources_are_addresses_or_cidrs_and_a_bad_one_is_named():
    nets = auth.parse_sources(["10.0.3.7", "10.1.0.0/16", "fd00::/8", " 127.0.0.1/32 "])
    assert [str(n) for n in nets] == ["10.0.3.7/32", "10.1.0.0/16", "fd00::/8", "127.0.0.1/32"]
    with pytest.raises(ValueError, match="not an address or CIDR: 'proxy.example'"):
        auth.parse_sources(["proxy.example"])


def test_only_a_peer_in_a_trusted_network_is_trusted():
    nets = auth.parse_sources(["10.1.0.0/16", "fd00::/8"])
    assert auth.is_trusted("10.1.200.3", nets)
    assert auth.is_trusted("::ffff:10.1.0.9", nets)  # an IPv4 peer on a dual-stack socket
    assert auth.is_trusted("fd00::12", nets)
    for peer in ("10.2.0.1", "127.0.0.1", "fe80::1", "", None, "not-an-ip", "/run/proxy.sock"):
        assert not auth.is_trusted(peer, nets), peer
    assert not auth.is_trusted("10.1.0.1", ())


# --- the proxy's headers -----------------------------------------------------------------------------

PROXY = auth.ProxySettings(trusted=auth.parse_sources(["10.1.0.0/16"]))


def test_headers_from_an_untrusted_source_are_never_believed():
    answer = auth.proxy_identity(
        "10.9.0.1", headers([("X-Remote-User", "admin"), ("X-Remote-Group", "system:masters")]), PROXY
    )
    assert isinstance(answer, Refusal) and answer.status == 403
    assert answer.reason.startswith(
        "this dashboard answers only through its authenticating proxy: requests from 10.9.0.1 are refused"
    )
    assert "admin" not in answer.reason and "system:masters" not in answer.reason
    assert auth.proxy_identity(None, headers([("X-Remote-User", "admin")]), PROXY).status == 403


def test_a_trusted_proxy_must_name_one_user():
    assert auth.proxy_identity("10.1.0.5", headers([]), PROXY) == Refusal(
        401, "the authenticating proxy named no user: its request has no X-Remote-User header"
    )
    assert auth.proxy_identity("10.1.0.5", headers([("X-Remote-User", "  ")]), PROXY).status == 401
    two = auth.proxy_identity("10.1.0.5", headers([("X-Remote-User", "alice"), ("x-remote-user", "bob")]), PROXY)
    assert two == Refusal(401, "the authenticating proxy sent 2 different X-Remote-User headers")


def test_the_user_and_groups_a_trusted_proxy_names():
    lines = [("x-remote-user", "alice"), ("X-Remote-Group", "team-a, ml"), ("X-Remote-Group", "ml"), ("Other", "x")]
    assert auth.proxy_identity("10.1.0.5", headers(lines), PROXY) == Identity(
        "alice", ("team-a", "ml", auth.AUTHENTICATED)
    )
    # oauth2-proxy's headers, one group a line (the aggregation layer's way), the API server's prefixes.
    oauth2 = auth.ProxySettings(
        trusted=PROXY.trusted,
        user_header="X-Forwarded-Email",
        group_header="X-Forwarded-Groups",
        group_separator="",
        user_prefix="oidc:",
        group_prefix="oidc:",
    )
    lines = [("X-Forwarded-Email", "alice@example.org"), ("X-Forwarded-Groups", "a,b"), ("X-Remote-User", "root")]
    assert auth.proxy_identity("10.1.0.5", headers(lines), oauth2) == Identity(
        "oidc:alice@example.org", ("oidc:a,b", auth.AUTHENTICATED)
    )
    # Names are UTF-8 on the wire; HTTP hands them over as Latin-1.
    utf8 = "zoë".encode().decode("latin-1")
    assert auth.proxy_identity("10.1.0.5", headers([("X-Remote-User", utf8)]), PROXY).user == "zoë"


# --- tokens --------------------------------------------------------------------------------------------


def test_bearer_tokens():
    assert auth.bearer_token("Bearer abc.def") == "abc.def"
    assert auth.bearer_token("bearer   abc ") == "abc"
    for value in (None, "", "Basic dXNlcjpwdw==", "Bearer", "Bearer  ", "abc"):
        assert auth.bearer_token(value) is None, value
    assert auth.token_key("secret-token") != b"secret-token" and len(auth.token_key("secret-token")) == 32


def test_a_token_review_answer_gives_the_identity_or_401_without_the_token():
    token = "eyJhbGciOi.secret.part"
    review = auth.token_review(token)
    assert review["kind"] == "TokenReview" and review["spec"] == {"token": token}
    answer = {
        "spec": {"token": token},
        "status": {
            "authenticated": True,
            "user": {
                "username": "system:serviceaccount:a:viewer",
                "uid": "u-1",
                "groups": ["system:serviceaccounts", "system:authenticated"],
                "extra": {"authentication.kubernetes.io/pod-name": ["p"]},
            },
        },
    }
    assert auth.reviewed_identity(answer) == Identity(
        "system:serviceaccount:a:viewer",
        ("system:serviceaccounts", "system:authenticated"),
        "u-1",
        (("authentication.kubernetes.io/pod-name", ("p",)),),
    )
    refused = auth.reviewed_identity(
        {"spec": {"token": token}, "status": {"authenticated": False, "error": f"invalid token {token}"}}
    )
    assert refused.status == 401 and token not in refused.reason and "does not accept this token" in refused.reason
    assert auth.reviewed_identity({}).status == 401


def _jwt(payload: dict) -> str:
    def part(d: dict) -> str:
        return base64.urlsafe_b64encode(json.dumps(d).encode()).decode().rstrip("=")

    return f"{part({'alg': 'RS256'})}.{part(payload)}.c2lnbmF0dXJl"


def test_a_jwts_expiry_is_read_and_anything_else_has_none():
    assert auth.token_expiry(_jwt({"exp": 1_900_000_000, "sub": "x"})) == 1_900_000_000.0
    for token in ("opaque-static-token", _jwt({"sub": "x"}), _jwt({"exp": "soon"}), "a.!!!.c", _jwt({"exp": True})):
        assert auth.token_expiry(token) is None, token


# --- sessions and cookies ------------------------------------------------------------------------------


def test_a_session_lasts_its_time_never_past_the_tokens_expiry_and_ends_when_asked():
    clock = Clock()
    sessions = auth.Sessions(3600, clock=clock)
    alice = Identity("alice")
    sid, seconds = sessions.start(alice)
    assert seconds == 3600 and len(sid) >= 43 and sessions.identity(sid) == alice
    assert sessions.identity("forged") is None and sessions.identity(None) is None
    clock.now += 3599
    assert sessions.identity(sid) == alice
    clock.now += 1
    assert sessions.identity(sid) is None
    short, seconds = sessions.start(alice, token_expires=clock.now + 600)
    assert seconds == 600
    clock.now += 600
    assert sessions.identity(short) is None
    other, _ = sessions.start(alice)
    sessions.end(other)
    assert sessions.identity(other) is None


def test_sessions_are_bounded():
    sessions = auth.Sessions(3600, clock=Clock(), limit=3)
    ids = [sessions.start(Identity(f"u{i}"))[0] for i in range(10)]
    assert len(sessions) == 3
    assert [sessions.identity(s) for s in ids[-3:]] == [Identity("u7"), Identity("u8"), Identity("u9")]
    assert sessions.identity(ids[0]) is None


def test_the_session_cookie():
    assert auth.session_cookie("abc", 600, secure=False) == (
        "hpo-dashboard-session=abc; Max-Age=600; Path=/; HttpOnly; SameSite=Strict"
    )
    assert auth.session_cookie("abc", 600, secure=True).endswith("; HttpOnly; SameSite=Strict; Secure")
    assert auth.ended_cookie(False).startswith("hpo-dashboard-session=; Max-Age=0;")
    assert auth.session_of("a=1; hpo-dashboard-session=xyz_-9; b=2") == "xyz_-9"
    for header in (None, "", "a=1", "hpo-dashboard-session=", 'x="unterminated'):
        assert auth.session_of(header) is None, header
    assert auth.over_tls("https", None) and auth.over_tls("http", "https") and auth.over_tls("http", "HTTPS, http")
    assert not auth.over_tls("http", None) and not auth.over_tls("http", "http")


# --- access reviews ---------------------------------------------------------------------------------


def test_the_access_review_asks_about_the_users_listing_of_experiments_in_the_namespace():
    who = Identity("alice", ("team-a",), "u-1", (("k", ("v",)),))
    assert auth.access_review(who, "team-a") == {
        "apiVersion": "authorization.k8s.io/v1",
        "kind": "SubjectAccessReview",
        "spec": {
            "user": "alice",
            "groups": ["team-a"],
            "uid": "u-1",
            "extra": {"k": ["v"]},
            "resourceAttributes": {
                "namespace": "team-a",
                "verb": "list",
                "group": "hpo.dev",
                "resource": "experiments",
            },
        },
    }
    assert auth.access_refusal(who, "team-a", {"status": {"allowed": True}}) is None
    assert auth.access_refusal(who, "team-b", {"status": {"allowed": False}}) == Refusal(
        403, "alice may not list experiments.hpo.dev in namespace team-b"
    )
    assert auth.access_refusal(who, "b", {"status": {"allowed": True, "denied": True}}).status == 403
    assert auth.access_refusal(who, "b", {"status": {"allowed": False, "reason": "no"}}).reason.endswith(": no")


def test_access_answers_are_cached_for_their_time_allowed_or_not_and_bounded(monkeypatch):
    clock = Clock()
    monkeypatch.setattr(reviews, "ACCESS_ENTRIES", 4)
    server = ReviewAnswers({"alice": {"a"}})
    reviewer = reviews.Reviewer(server, auth.AuthSettings(mode="token", access_seconds=20))
    reviewer.access.clock = clock
    alice = Identity("alice")

    async def run():
        assert await reviewer.refusal(alice, "a") is None
        assert (await reviewer.refusal(alice, "b")).status == 403
        for _ in range(3):
            assert await reviewer.refusal(alice, "a") is None
            assert (await reviewer.refusal(alice, "b")).status == 403
        assert server.asked == [("alice", "a"), ("alice", "b")]  # both answers reused
        clock.now += 20
        await reviewer.refusal(alice, "a")
        await reviewer.refusal(alice, "b")
        assert len(server.asked) == 4  # asked again once their time was up
        for i in range(50):  # many namespaces: the cache keeps its bound
            await reviewer.refusal(alice, f"ns-{i}")
        assert len(reviewer.access) == 4

    asyncio.run(run())


def test_the_same_question_in_flight_is_asked_once_and_a_failure_is_refused_not_cached():
    server = ReviewAnswers({"alice": {"a"}}, delay=0.05)
    reviewer = reviews.Reviewer(server, auth.AuthSettings(mode="token"))
    alice = Identity("alice")

    async def run():
        answers = await asyncio.gather(*(reviewer.refusal(alice, "a") for _ in range(20)))
        assert answers == [None] * 20 and server.asked == [("alice", "a")]
        server.down = True
        refused = await reviewer.refusal(alice, "c")
        assert refused.status == 503 and refused.reason.startswith("the dashboard cannot check access")
        server.down = False
        assert (await reviewer.refusal(alice, "c")).status == 403  # asked again: the failure was not kept

    asyncio.run(run())


def test_a_request_that_goes_away_does_not_take_the_answer_from_the_others():
    server = ReviewAnswers({"alice": {"a"}}, delay=0.1)
    reviewer = reviews.Reviewer(server, auth.AuthSettings(mode="token"))
    alice = Identity("alice")

    async def run():
        first = asyncio.create_task(reviewer.refusal(alice, "a"))
        await asyncio.sleep(0.01)
        second = asyncio.create_task(reviewer.refusal(alice, "a"))
        await asyncio.sleep(0.01)
        first.cancel()  # its client went away while the review was in flight
        assert await second is None
        assert server.asked == [("alice", "a")] and reviewer.access.get((alice, "a")) is True

    asyncio.run(run())


def test_visible_namespaces_one_review_for_a_cluster_wide_grant_else_one_each():
    server = ReviewAnswers({"admin": {""}, "alice": {"a", "c"}})
    reviewer = reviews.Reviewer(server, auth.AuthSettings(mode="token"))

    async def run():
        assert await reviewer.visible(Identity("admin"), {"a", "b", "c"}) == {"a", "b", "c"}
        assert server.asked == [("admin", "")]
        assert await reviewer.visible(Identity("alice"), {"a", "b", "c"}) == {"a", "c"}
        assert await reviewer.visible(Identity("bob"), {"a", "b"}) == set()
        assert await reviewer.visible(Identity("bob"), set()) == set()

    asyncio.run(run())


def test_token_reviews_are_cached_by_digest_for_their_time():
    clock = Clock()
    server = ReviewAnswers({}, tokens={"good-token": "alice"})
    reviewer = reviews.Reviewer(server, auth.AuthSettings(mode="token", review_seconds=10))
    reviewer.tokens.clock = clock

    async def run():
        assert await reviewer.identity("good-token") == Identity("alice")
        assert (await reviewer.identity("bad-token")).status == 401
        await reviewer.identity("good-token")
        await reviewer.identity("bad-token")
        assert server.asked == [("tokenreviews", "alice"), ("tokenreviews", "?")]
        assert all(isinstance(key[1], bytes) and b"token" not in key[1] for key in reviewer.tokens._items)
        clock.now += 10
        await reviewer.identity("good-token")
        assert len(server.asked) == 3

    asyncio.run(run())


# --- the LRU --------------------------------------------------------------------------------------------


def test_the_lru_keeps_its_entry_and_byte_bounds_least_recently_used_out_first():
    cache: Lru[str, bytes] = Lru(3, max_bytes=100)
    for key in "abc":
        cache.put(key, b"x" * 10)
    cache.get("a")  # used: b is now the oldest
    cache.put("d", b"x" * 10)
    assert sorted(cache._items) == ["a", "c", "d"]
    cache.put("e", b"x" * 85)  # four entries: c goes; 105 bytes: a goes
    assert sorted(cache._items) == ["d", "e"] and cache.bytes == 95
    cache.put("f", b"x" * 10)  # 105 bytes: d goes
    assert sorted(cache._items) == ["e", "f"] and cache.bytes == 95
    cache.put("huge", b"x" * 101)  # larger than the bound: not kept
    assert cache.get("huge") is None and cache.bytes == 95
    cache.put("e", b"y")
    assert cache.bytes == 11 and cache.get("e") == b"y"
    assert cache.pop("e") == b"y" and cache.pop("f") and cache.bytes == 0 and len(cache) == 0


def test_the_lru_forgets_an_entry_at_its_expiry():
    clock = Clock()
    cache: Lru[str, str] = Lru(10, ttl=5, clock=clock)
    cache.put("a", "1")
    cache.put("b", "2", ttl=1)
    cache.put("c", "3", expires=clock.now + 100)
    clock.now += 1
    assert cache.get("b") is None and cache.get("a") == "1"
    clock.now += 4
    assert cache.get("a") is None and cache.get("c") == "3"
    with pytest.raises(ValueError):
        Lru(0)
