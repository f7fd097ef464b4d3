"""The dashboard's HTTP layer without a cluster: a real server on a loopback socket over a store
filled by hand. What the pages get, what is refused (writes without --allow-write, unknown Host
names, cross-site writes), the security headers, and the event stream."""

from __future__ import annotations

import asyncio
import copy
import http.client
import json
import threading
import time

import pytest
import uvicorn

from hpo_operator.dashboard import guards, server
from hpo_operator.dashboard.cluster import Store
from tests import dashboard_objects as objs

NS = "team-a"


class LocalServer:
    """server.create_app on 127.0.0.1 in a thread with its own event loop."""

    def __init__(self, options: guards.Options, objects: list[tuple[str, dict]], actions=None):
        self.options, self.objects, self.actions = options, objects, actions
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
                server.create_app(self.store, self.options, self.actions),
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

    def request(self, method: str, path: str, body: dict | None = None, headers: dict | None = None):
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        conn.request(
            method,
            path,
            body=json.dumps(body) if body is not None else None,
            headers={"Host": f"127.0.0.1:{self.port}", **(headers or {})},
        )
        response = conn.getresponse()
        data = response.read()
        conn.close()
        return response, data

    def get_json(self, path: str) -> tuple[int, object]:
        response, data = self.request("GET", path)
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
