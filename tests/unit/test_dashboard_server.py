"""The dashboard's HTTP layer without a cluster: a real server on a loopback socket over a store
filled by hand. What the pages get, what is refused (writes without --allow-write, unknown Host
names, cross-site writes), the security headers, the event stream, who is let in (modes proxy and
token, the API server's review answers stood in by ReviewAnswers) and what each user sees, and
the figure cache's bound."""

from __future__ import annotations

import asyncio
import copy
import http.client
import json
import threading
import time

import pytest
import uvicorn

from hpo_operator.dashboard import auth, guards, reviews, routes, server
from hpo_operator.dashboard.cache import PageCache
from hpo_operator.dashboard.cluster import Store
from tests.support import dashboard_objects as objs
from tests.support.dashboard_objects import ReviewAnswers

NS = "team-a"


class LocalServer:
    """server.create_app on 127.0.0.1 in a thread with its own event loop."""

    def __init__(self, options: guards.Options, objects: list[tuple[str, dict]], actions=None, answers=None):
        self.options, self.objects, self.actions, self.answers = options, objects, actions, answers
        self.loop: asyncio.AbstractEventLoop | None = None
        self.ready = threading.Event()
        self.thread = threading.Thread(target=lambda: asyncio.run(self._main()), daemon=True)

    async def _main(self) -> None:
        self.loop = asyncio.get_running_loop()
        self.store = Store(connection=None, namespaces=self.options.namespaces)  # type: ignore[arg-type]
        for kind, obj in self.objects:
            self.store._put(kind, obj)
        self.store.synced.set()
        await self.store.start(watch=False)
        sock = server.bind("127.0.0.1", 0)
        self.port = sock.getsockname()[1]
        self.server = uvicorn.Server(
            uvicorn.Config(
                server.create_app(
                    self.store,
                    self.options,
                    self.actions,
                    reviews.Reviewer(self.answers, self.options.auth) if self.answers else None,
                ),
                log_level="warning",
                lifespan="off",
                timeout_graceful_shutdown=1,
            )
        )
        self.server.install_signal_handlers = lambda: None  # not the main thread
        self.ready.set()
        await self.server.serve(sockets=[sock])
        await self.store.stop()

    def __enter__(self) -> LocalServer:
        self.thread.start()
        assert self.ready.wait(10)
        time.sleep(0.2)
        return self

    def __exit__(self, *exc) -> None:
        self.server.should_exit = True
        self.thread.join(10)

    def request(
        self, method: str, path: str, body: dict | bytes | None = None, headers: dict | None = None, source: str = ""
    ):
        """`source`: the address the request comes from (any of 127.0.0.0/8), else the kernel's."""
        conn = http.client.HTTPConnection(
            "127.0.0.1", self.port, timeout=10, source_address=(source, 0) if source else None
        )
        conn.request(
            method,
            path,
            body=body if isinstance(body, bytes) or body is None else json.dumps(body),
            headers={"Host": f"127.0.0.1:{self.port}", **(headers or {})},
        )
        response = conn.getresponse()
        data = response.read()
        conn.close()
        return response, data

    def get_json(self, path: str, headers: dict | None = None, source: str = "") -> tuple[int, object]:
        response, data = self.request("GET", path, headers=headers, source=source)
        return response.status, json.loads(data)

    def put(self, kind: str, obj: dict) -> None:
        assert self.loop is not None
        self.loop.call_soon_threadsafe(self.store._put, kind, obj)


def _objects(name: str = "exp", configurations: int = 12) -> tuple[dict, list[dict], list[tuple[str, dict]]]:
    exp, trials = objs.make(name, configurations)
    for i, obj in enumerate([exp, *trials]):
        obj["metadata"]["namespace"] = NS
        obj["metadata"]["resourceVersion"] = str(i + 1)
    return exp, trials, [("experiments", exp), *(("trials", t) for t in trials)]


@pytest.fixture
def site():
    exp, trials, objects = _objects()
    with LocalServer(guards.Options(namespaces=[NS]), objects) as s:
        s.exp, s.trials = exp, trials
        yield s


def test_the_api_serves_the_list_the_experiment_its_trials_and_recovery(site):
    status, body = site.get_json("/api/experiments")
    assert status == 200 and [e["name"] for e in body["experiments"]] == ["exp"]
    status, view = site.get_json(f"/api/experiments/{NS}/exp")
    assert status == 200 and view["summary"]["trials"] == len(site.trials)
    status, rows = site.get_json(f"/api/experiments/{NS}/exp/trials")
    assert status == 200 and [r["name"] for r in rows] == [t["metadata"]["name"] for t in site.trials]
    status, rec = site.get_json(f"/api/experiments/{NS}/exp/recovery")
    assert status == 200 and rec["configurations"] == 12
    for kind in ("history", "parallel", "importance", "slice", "curves"):
        status, fig = site.get_json(f"/api/experiments/{NS}/exp/figures/{kind}?metric=loss")
        assert status == 200 and fig["data"] and fig["version"] == view["version"], kind


def test_bad_requests_say_why(site):
    assert site.get_json("/api/experiments?status=done") == (
        400,
        {"error": "unknown status 'done': use one of Created, Running, Suspended, Succeeded, Failed"},
    )
    assert site.get_json(f"/api/experiments/{NS}/nope") == (
        404,
        {"error": f"experiment nope not found in namespace {NS}"},
    )
    assert site.get_json("/api/experiments/other/exp") == (
        404,
        {"error": "this dashboard does not watch namespace other"},
    )
    status, body = site.get_json(f"/api/experiments/{NS}/exp/figures/pie")
    assert status == 404 and "no figure pie" in body["error"]


def test_trial_rows_are_rebuilt_when_a_trial_changes(site):
    trial = copy.deepcopy(site.trials[0])
    trial["metadata"]["resourceVersion"] = "999"
    trial["status"] = {"phase": "Failed", "reason": "Evicted", "failureClass": "Infrastructure"}
    site.put("trials", trial)
    time.sleep(0.3)
    _, rows = site.get_json(f"/api/experiments/{NS}/exp/trials")
    assert (rows[0]["phase"], rows[0]["failureClass"]) == ("Failed", "Infrastructure")
    assert rows[1:] == site.get_json(f"/api/experiments/{NS}/exp/trials")[1][1:]


def test_writes_are_refused_without_allow_write(site):
    response, data = site.request(
        "POST", f"/api/experiments/{NS}/exp/stop", {}, {"content-type": "application/json", guards.WRITE_HEADER: "1"}
    )
    assert response.status == 403
    assert "read-only: start it with `kubectl hpo dashboard --allow-write`" in json.loads(data)["error"]


class Recording:
    """Stands in for the plugin's client (covered by the browser test against a cluster): records
    which action the server asked for."""

    def __init__(self):
        self.calls = []

    def set_suspend(self, namespace, experiment, suspend):
        self.calls.append(("suspend", namespace, experiment, suspend))
        return {"message": "ok"}

    def restart_trials(self, namespace, experiment, trials):
        self.calls.append(("restart", namespace, experiment, trials))
        return {"results": []}

    @staticmethod
    def error_types():
        return (LookupError,)


def test_writes_need_the_custom_header_json_and_the_same_origin():
    _, _, objects = _objects()
    actions = Recording()
    with LocalServer(guards.Options(namespaces=[NS], allow_write=True), objects, actions) as s:
        path = f"/api/experiments/{NS}/exp/stop"
        ok = {"content-type": "application/json", guards.WRITE_HEADER: "1"}
        # What a cross-site form can send: no custom header, a form body.
        response, data = s.request("POST", path, {}, {"content-type": "application/x-www-form-urlencoded"})
        assert response.status == 403 and "needs the header" in json.loads(data)["error"]
        response, data = s.request("POST", path, {}, {**ok, "origin": "http://evil.example"})
        assert response.status == 403 and "another origin" in json.loads(data)["error"]
        assert actions.calls == []
        response, _ = s.request("POST", path, {}, {**ok, "origin": f"http://127.0.0.1:{s.port}"})
        assert response.status == 200
        response, _ = s.request("POST", f"/api/experiments/{NS}/exp/restart-trials", {"trials": ["exp-0001", 3]}, ok)
        assert response.status == 200
        assert actions.calls == [("suspend", NS, "exp", True), ("restart", NS, "exp", ["exp-0001"])]
        response, _ = s.request("GET", path)
        assert response.status == 405


def test_unknown_host_names_are_refused(site):
    response, data = site.request("GET", "/api/config", headers={"Host": "attacker.example:8080"})
    assert response.status == 421 and b"unknown host" in data
    for host in ("localhost", f"localhost:{site.port}", "[::1]:80"):
        assert site.request("GET", "/api/config", headers={"Host": host})[0].status == 200, host
    # The kubelet's probes name the pod's IP: /healthz answers any Host, and says nothing else.
    response, data = site.request("GET", "/healthz", headers={"Host": "10.1.2.3:8080"})
    assert (response.status, data) == (200, b"ok")


def test_allowed_hosts():
    assert guards.Options().hosts() == {"localhost", "127.0.0.1", "::1"}
    assert guards.Options(address="10.1.2.3").hosts() == {"localhost", "127.0.0.1", "::1", "10.1.2.3"}
    assert guards.Options(address="0.0.0.0").hosts() is None
    assert guards.Options(allowed_hosts=["Dash.example"]).hosts() == {"localhost", "127.0.0.1", "::1", "dash.example"}
    assert guards.Options(address="0.0.0.0", allowed_hosts=["dash"]).hosts() == {
        "localhost",
        "127.0.0.1",
        "::1",
        "dash",
    }
    assert guards.Options(allowed_hosts=["*"]).hosts() is None
    assert guards.is_loopback("127.0.0.1") and guards.is_loopback("::1") and not guards.is_loopback("0.0.0.0")


def test_every_answer_carries_the_security_headers(site):
    for path in ("/", f"/experiments/{NS}/exp", "/api/config", "/static/experiment.js", "/nope"):
        response, _ = site.request("GET", path)
        csp = response.getheader("content-security-policy")
        assert "script-src 'self' 'unsafe-eval';" in csp and "frame-ancestors 'none'" in csp, path
        assert response.getheader("x-content-type-options") == "nosniff"
    response, data = site.request("GET", "/static/plotly.min.js")
    assert response.status == 200 and response.getheader("content-type").startswith("text/javascript")
    assert b"plotly.js" in data[:2000] and len(data) > 1_000_000


def test_both_pages_are_the_one_shell_with_their_own_title_crumbs_content_and_script(site):
    pages = {}
    for path, name in (("/", "list"), (f"/experiments/{NS}/exp", "experiment")):
        response, data = site.request("GET", path)
        assert response.status == 200 and response.getheader("content-type") == "text/html; charset=utf-8"
        pages[name] = page = data.decode()
        assert page.startswith("<!doctype html>") and page.endswith("</body>\n</html>\n")
        assert (
            f'<script src="/static/common.js" defer></script>\n<script src="/static/{name}.js" defer></script>' in page
        )
        assert '<main>\n  <div id="errors" class="errors" hidden></div>\n' in page
        assert "<!-- title -->" not in page and "$" not in page  # every part filled, no marker left
    assert "<title>Experiments · hpo dashboard</title>" in pages["list"] and 'id="filters"' in pages["list"]
    assert '<span id="scope" class="scope"></span>\n  <span id="live"' in pages["list"]
    assert "<title>Experiment · hpo dashboard</title>" in pages["experiment"] and 'id="trials"' in pages["experiment"]
    assert '<link rel="preload" href="/static/plotly.min.js" as="script">' in pages["experiment"]
    assert "plotly" not in pages["list"] and 'id="filters"' not in pages["experiment"]


def test_the_event_stream_says_which_experiments_changed(site):
    conn = http.client.HTTPConnection("127.0.0.1", site.port, timeout=10)
    conn.request("GET", "/api/events", headers={"Host": "127.0.0.1"})
    response = conn.getresponse()
    assert response.getheader("content-type").startswith("text/event-stream")

    def message() -> dict:
        while True:
            line = response.fp.readline().decode()
            if line.startswith("data: "):
                return json.loads(line[6:])

    hello = message()
    assert hello["experiments"] is None
    exp = copy.deepcopy(site.exp)
    exp["status"]["phase"] = "Succeeded"
    site.put("experiments", exp)
    assert message()["experiments"] == [[NS, "exp"]]
    conn.close()


def test_the_command_refuses_bad_options_before_it_serves(tmp_path):
    from typer.testing import CliRunner

    from hpo_operator.cli.main import app

    runner = CliRunner()
    both = runner.invoke(app, ["dashboard", "-n", "a", "-A", "--no-browser"])
    assert both.exit_code == 1 and "use -n/--namespace or -A/--all-namespaces, not both" in both.output
    missing = runner.invoke(app, ["dashboard", "--no-browser", "--kubeconfig", str(tmp_path / "nope")])
    assert missing.exit_code == 1 and f"kubeconfig {tmp_path / 'nope'} does not exist" in missing.output
    exposed = runner.invoke(
        app, ["dashboard", "--no-browser", "--address", "0.0.0.0", "--kubeconfig", str(tmp_path / "nope")]
    )
    assert (
        "warning: listening on 0.0.0.0: anyone who can reach it reads the cluster with your credentials"
        in exposed.output
    )


def test_figures_of_several_objectives_are_served_per_objective_and_an_unknown_one_is_refused():
    exp, trials = objs.make("mo", 12, multi=True)
    for i, obj in enumerate([exp, *trials]):
        obj["metadata"]["namespace"] = NS
        obj["metadata"]["resourceVersion"] = str(i + 1)
    objects = [("experiments", exp), *(("trials", t) for t in trials)]
    with LocalServer(guards.Options(namespaces=[NS]), objects) as s:
        status, pareto = s.get_json(f"/api/experiments/{NS}/mo/figures/pareto")
        assert status == 200 and "Best Trial" in {t.get("name") for t in pareto["data"]}
        colours = {}
        for name in ("loss", "latency_ms"):
            status, fig = s.get_json(f"/api/experiments/{NS}/mo/figures/parallel?metric={name}")
            assert status == 200 and fig["data"][0]["line"]["colorbar"]["title"]["text"] == name
            colours[name] = fig["data"][0]["line"]["color"]
        assert colours["loss"] != colours["latency_ms"]
        # No objective named: the first (the same figure, cached once).
        status, fig = s.get_json(f"/api/experiments/{NS}/mo/figures/parallel")
        assert fig["data"][0]["line"]["color"] == colours["loss"]
        assert s.get_json(f"/api/experiments/{NS}/mo/figures/history?metric=nope") == (
            400,
            {"error": "no objective 'nope': the objectives are loss, latency_ms"},
        )


# --- who is asking --------------------------------------------------------------------------------------

A, B = "team-a", "team-b"


def _teams() -> list[tuple[str, dict]]:
    """An experiment in each of two namespaces."""
    objects = []
    for ns in (A, B):
        exp, trials = objs.make(f"exp-{ns[-1]}", 4)
        for i, obj in enumerate([exp, *trials]):
            obj["metadata"]["namespace"] = ns
            obj["metadata"]["resourceVersion"] = str(i + 1)
        objects += [("experiments", exp), *(("trials", t) for t in trials)]
    return objects


def _proxy(trusted: str, namespaces=None) -> guards.Options:
    return guards.Options(
        namespaces=namespaces,
        auth=auth.AuthSettings(mode="proxy", proxy=auth.ProxySettings(trusted=auth.parse_sources([trusted]))),
    )


ALICE = {"X-Remote-User": "alice", "X-Remote-Group": "ml"}


def test_proxy_mode_believes_the_users_headers_from_its_trusted_source_only():
    answers = ReviewAnswers({"alice": {A}, "root": {""}})
    with LocalServer(_proxy("127.0.0.1/32"), _teams(), answers=answers) as s:
        # The same headers from another address: refused, for the API and the pages alike.
        for headers in (ALICE, {"X-Remote-User": "root", "X-Remote-Group": "system:masters"}):
            status, body = s.get_json("/api/experiments", headers=headers, source="127.0.0.2")
            assert status == 403 and body["error"].startswith(
                "this dashboard answers only through its authenticating proxy: requests from 127.0.0.2 are refused"
            )
        response, data = s.request("GET", "/", headers=ALICE, source="127.0.0.2")
        assert response.status == 403 and data.startswith(b"this dashboard answers only through")
        assert answers.asked == []  # nothing was even asked about them
        # Open to anyone: the kubelet's probes, the pages' own scripts.
        assert s.request("GET", "/healthz", source="127.0.0.2")[0].status == 200
        assert s.request("GET", "/static/common.js", source="127.0.0.2")[0].status == 200
        # From the proxy, with no user named: 401.
        assert s.get_json("/api/experiments") == (
            401,
            {"error": "the authenticating proxy named no user: its request has no X-Remote-User header"},
        )
        # From the proxy: alice sees team-a's experiment only; root (a cluster-wide grant) both.
        status, body = s.get_json("/api/experiments", headers=ALICE)
        assert status == 200 and [(e["namespace"], e["name"]) for e in body["experiments"]] == [(A, "exp-a")]
        status, body = s.get_json("/api/experiments", headers={"X-Remote-User": "root"})
        assert sorted(e["namespace"] for e in body["experiments"]) == [A, B]
        assert ("alice", A) in answers.asked and ("root", "") in answers.asked


def test_a_namespace_the_user_may_not_list_gets_403_on_every_page_and_api_call():
    answers = ReviewAnswers({"alice": {A}, "carol": {A}})
    with LocalServer(_proxy("127.0.0.1/32"), _teams(), answers=answers) as s:
        refused = "alice may not list experiments.hpo.dev in namespace team-b"
        for path in (
            f"/api/experiments/{B}/exp-b",
            f"/api/experiments/{B}/exp-b/trials",
            f"/api/experiments/{B}/exp-b/recovery",
            f"/api/experiments/{B}/exp-b/figures/history",
            f"/api/experiments/{B}/exp-b/figures/curves?trials=exp-b-0001",
            f"/api/experiments/{B}/nothing-here",  # not a word on whether it exists
            "/api/experiments/team-c/exp",
        ):
            status, body = s.get_json(path, headers=ALICE)
            assert status == 403 and body["error"].startswith("alice may not list experiments.hpo.dev"), path
            assert body["error"] == refused or "team-c" in path, path
        response, _ = s.request("GET", f"/experiments/{B}/exp-b", headers=ALICE)
        assert response.status == 403  # the page, whose own API calls say why
        response, _ = s.request("GET", f"/experiments/{A}/exp-a", headers=ALICE)
        assert response.status == 200
        for path in (f"/api/experiments/{A}/exp-a", f"/api/experiments/{A}/exp-a/trials"):
            assert s.get_json(path, headers=ALICE)[0] == 200, path
        # "mine" is the user the proxy names (alice created both experiments).
        status, body = s.get_json("/api/experiments?mine=true", headers={"X-Remote-User": "alice"})
        assert status == 200 and [e["name"] for e in body["experiments"]] == ["exp-a"]
        status, body = s.get_json("/api/experiments?mine=true", headers={"X-Remote-User": "carol"})
        assert status == 200 and body["experiments"] == []


def test_the_config_names_only_the_users_namespaces_and_the_user():
    answers = ReviewAnswers({"alice": {A}})
    with LocalServer(_proxy("127.0.0.1/32", namespaces=[A, B]), _teams(), answers=answers) as s:
        status, config = s.get_json("/api/config", headers=ALICE)
        assert status == 200
        assert (config["namespaces"], config["auth"], config["user"]) == ([A], "proxy", "alice")
        assert "revision" not in config  # a count of every namespace's changes
        status, config = s.get_json("/api/config", headers={"X-Remote-User": "bob"})
        assert config["namespaces"] == []


def test_the_event_stream_tells_a_user_of_their_namespaces_only():
    answers = ReviewAnswers({"alice": {A}})
    objects = _teams()
    with LocalServer(_proxy("127.0.0.1/32"), objects, answers=answers) as s:
        conn = http.client.HTTPConnection("127.0.0.1", s.port, timeout=10)
        conn.request("GET", "/api/events", headers={"Host": "127.0.0.1", **ALICE})
        response = conn.getresponse()
        assert response.status == 200

        def message() -> dict:
            while True:
                line = response.fp.readline().decode()
                if line.startswith("data: "):
                    return json.loads(line[6:])

        assert message() == {"experiments": None, "errors": []}
        exps = {o["metadata"]["namespace"]: o for kind, o in objects if kind == "experiments"}
        for ns in (B, A):  # team-b's change first: alice hears of team-a's only
            exp = copy.deepcopy(exps[ns])
            exp["status"]["phase"] = "Succeeded"
            s.put("experiments", exp)
            time.sleep(0.5)
        assert message() == {"experiments": [[A, "exp-a"]], "errors": []}
        conn.close()


def _token(session_seconds: float = 3600) -> guards.Options:
    return guards.Options(auth=auth.AuthSettings(mode="token", session_seconds=session_seconds))


SIGN_IN = {"content-type": "application/json", guards.WRITE_HEADER: "1"}


def test_token_mode_api_clients_send_a_bearer_token_and_browsers_sign_in_for_a_session_cookie():
    token = "token-of-alice-0123456789"
    answers = ReviewAnswers({"alice": {A}}, tokens={token: "alice"})
    with LocalServer(_token(), _teams(), answers=answers) as s:
        # Nobody yet: the API says how to sign in, a page is the sign-in page.
        response, data = s.request("GET", "/api/experiments")
        assert response.status == 401 and response.getheader("www-authenticate") == 'Bearer realm="hpo-dashboard"'
        assert json.loads(data)["error"].startswith("sign in:")
        response, data = s.request("GET", f"/experiments/{A}/exp-a")
        assert response.status == 401 and b"<title>Sign in \xc2\xb7 hpo dashboard</title>" in data
        assert b'<script src="/static/signin.js" defer></script>' in data

        # API clients: a bearer token.
        bearer = {"Authorization": f"Bearer {token}"}
        status, body = s.get_json("/api/experiments", headers=bearer)
        assert status == 200 and [e["namespace"] for e in body["experiments"]] == [A]
        assert s.get_json(f"/api/experiments/{B}/exp-b", headers=bearer)[0] == 403
        status, body = s.get_json("/api/experiments", headers={"Authorization": "Bearer forged"})
        assert status == 401 and "does not accept this token" in body["error"]

        # Signing in: only as the page does it (its header, JSON), with a token the API server accepts.
        assert (
            s.request("POST", "/api/session", {"token": token}, {"content-type": "application/json"})[0].status == 403
        )
        assert s.request("POST", "/api/session", {"token": "forged"}, SIGN_IN)[0].status == 401
        assert s.request("POST", "/api/session", {"nothing": 1}, SIGN_IN)[0].status == 400
        assert s.request("POST", "/api/session", b"x" * (auth.SIGN_IN_BODY_LIMIT + 1), SIGN_IN)[0].status == 413
        response, data = s.request("POST", "/api/session", {"token": token}, SIGN_IN)
        assert response.status == 200 and json.loads(data) == {"user": "alice", "seconds": 3600}
        cookie = response.getheader("set-cookie")
        assert cookie.endswith("; Max-Age=3600; Path=/; HttpOnly; SameSite=Strict")  # no Secure over plain HTTP
        assert token not in cookie and token.encode() not in data
        session = {"Cookie": cookie.split(";")[0]}
        status, body = s.get_json("/api/experiments", headers=session)
        assert status == 200 and [e["namespace"] for e in body["experiments"]] == [A]
        assert s.get_json(f"/api/experiments/{B}/exp-b/trials", headers=session)[0] == 403
        assert s.request("GET", "/", headers=session)[0].status == 200
        # Through a TLS-terminating Ingress, the cookie is Secure.
        response, _ = s.request("POST", "/api/session", {"token": token}, {**SIGN_IN, "X-Forwarded-Proto": "https"})
        assert response.getheader("set-cookie").endswith("; Secure")

        # Signing out ends the session.
        response, _ = s.request("DELETE", "/api/session", headers={**SIGN_IN, **session})
        assert response.status == 200 and "Max-Age=0" in response.getheader("set-cookie")
        assert s.get_json("/api/experiments", headers=session)[0] == 401
        assert s.request("GET", "/", headers={"Cookie": "hpo-dashboard-session=guessed"})[0].status == 401


def test_the_event_stream_ends_when_its_session_does(monkeypatch):
    monkeypatch.setattr(routes, "KEEPALIVE_SECONDS", 0.2)
    token = "token-of-alice"
    answers = ReviewAnswers({"alice": {A}}, tokens={token: "alice"})
    with LocalServer(_token(), _teams(), answers=answers) as s:
        response, _ = s.request("POST", "/api/session", {"token": token}, SIGN_IN)
        session = {"Cookie": response.getheader("set-cookie").split(";")[0]}
        conn = http.client.HTTPConnection("127.0.0.1", s.port, timeout=10)
        conn.request("GET", "/api/events", headers={"Host": "127.0.0.1", **session})
        stream = conn.getresponse()
        assert stream.status == 200 and stream.readline().startswith(b"retry: 2000")
        time.sleep(0.5)
        assert s.request("DELETE", "/api/session", headers={**SIGN_IN, **session})[0].status == 200
        started = time.monotonic()
        while stream.readline():  # keepalives, then the end of the stream
            assert time.monotonic() - started < 5, "the stream outlived its session"
        conn.close()


def test_a_session_ends_at_its_time():
    token = "token-of-alice"
    answers = ReviewAnswers({"alice": {A}}, tokens={token: "alice"})
    with LocalServer(_token(session_seconds=1), _teams(), answers=answers) as s:
        response, _ = s.request("POST", "/api/session", {"token": token}, SIGN_IN)
        session = {"Cookie": response.getheader("set-cookie").split(";")[0]}
        assert s.get_json("/api/experiments", headers=session)[0] == 200
        time.sleep(1.1)
        assert s.get_json("/api/experiments", headers=session)[0] == 401


def test_write_actions_are_never_served_with_authentication_on():
    for mode in ("proxy", "token"):
        options = guards.Options(allow_write=True, auth=auth.AuthSettings(mode=mode))
        with pytest.raises(ValueError, match="write actions are for `kubectl hpo dashboard --allow-write`"):
            server.create_app(
                Store(connection=None, namespaces=None), options, Recording(), reviews.Reviewer(None, options.auth)
            )  # type: ignore[arg-type]


def test_the_module_refuses_auth_options_that_cannot_work(capsys):
    from hpo_operator.dashboard.__main__ import main

    for argv, message in (
        (["-A", "--auth", "proxy"], "--auth proxy needs --trusted-proxy"),
        (["-A", "--auth", "token", "--trusted-proxy", "10.0.0.0/8"], "--trusted-proxy is for --auth proxy"),
        (["-A", "--auth", "proxy", "--trusted-proxy", "proxy.example"], "not an address or CIDR"),
        (["-A", "--allow-write"], "unrecognized arguments: --allow-write"),
    ):
        with pytest.raises(SystemExit) as e:
            main(argv)
        assert e.value.code == 2 and message in capsys.readouterr().err, argv


def test_the_figure_cache_keeps_its_bound_whatever_the_query_strings():
    exp, trials, objects = _objects(configurations=6)

    async def run() -> PageCache:
        store = Store(connection=None, namespaces=[NS])  # type: ignore[arg-type]
        for kind, obj in objects:
            store._put(kind, obj)
        cache = PageCache(store, figure_entries=8, figure_bytes=10**9)
        names = [t["metadata"]["name"] for t in trials]
        for i in range(40):  # 40 distinct requests: a trial chosen, and an unknown metric
            await cache.figure_json((NS, "exp"), "curves", f"m{i}", (names[i % len(names)],))
        assert len(cache.figures) == 8
        one = max(size for _, _, size in cache.figures._items.values())
        small = PageCache(store, figure_entries=1000, figure_bytes=3 * one)
        for i in range(40):
            await small.figure_json((NS, "exp"), "curves", f"m{i}", ())
        assert len(small.figures) <= 3 and small.figures.bytes <= 3 * one
        return cache

    asyncio.run(run())
