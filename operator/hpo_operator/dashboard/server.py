"""The dashboard's web server: two pages, a JSON API over the in-memory copy, and an event stream.

    GET  /                                         the experiment list (static/list.html in page.html)
    GET  /experiments/NS/NAME                      an experiment (static/experiment.html in page.html)
    GET  /api/config                               scope, context, read-only or not
    GET  /api/experiments?name=&status=&...        list rows, with `kubectl hpo list`'s filters
    GET  /api/experiments/NS/NAME                  summary, spec, conditions, history, best trial
    GET  /api/experiments/NS/NAME/trials           one row per trial
    GET  /api/experiments/NS/NAME/recovery         per configuration, its attempts
    GET  /api/experiments/NS/NAME/figures/KIND     a plotly figure (history, parallel, ...)
    GET  /api/events                               server-sent events: which experiments changed
    POST /api/experiments/NS/NAME/stop|resume      with --allow-write only (403 otherwise)
    POST /api/experiments/NS/NAME/restart-trials   {"trials": [...]}, with --allow-write only

Security: every user-controlled string is rendered by the pages as text (textContent, never
innerHTML), and escaped for plotly; the Content-Security-Policy allows scripts from this server
only (no inline script, so injected markup could not run any); requests must name an allowed
Host (a page on another site cannot reach a loopback server by rebinding its DNS name); writes
need --allow-write, a JSON body and a custom header (which a cross-site form or fetch cannot send
without a preflight this server never grants).
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import logging
import re
import signal
import socket
import string
import time
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Awaitable, Callable

import anyio.to_thread
import uvicorn
from starlette.applications import Starlette
from starlette.datastructures import Headers, MutableHeaders
from starlette.requests import Request
from starlette.responses import FileResponse, HTMLResponse, JSONResponse, PlainTextResponse, Response, StreamingResponse
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from hpo_operator.client.errors import InvalidInput
from . import data, figures
from .cluster import Connection, Key, Store, connect

log = logging.getLogger(__name__)

STATIC = Path(__file__).parent / "static"
WRITE_HEADER = "X-HPO-Dashboard"
KEEPALIVE_SECONDS = 15
SYNC_WAIT_SECONDS = 10  # a request made while the first listing runs waits for it this long
# A study for the plots is rebuilt at most this often while an experiment changes: at least every
# STUDY_MIN_AGE seconds, and no more often than twice the time the last one took to build.
STUDY_MIN_AGE = 1.0
LOOPBACK_NAMES = ("localhost", "127.0.0.1", "::1")
CSP = ("default-src 'self'; script-src 'self' 'unsafe-eval'; style-src 'self' 'unsafe-inline'; "
       "img-src 'self' data: blob:; connect-src 'self'; object-src 'none'; base-uri 'none'; "
       "form-action 'none'; frame-ancestors 'none'")
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
    address: str = "127.0.0.1"
    port: int = 8080
    namespaces: list[str] | None = None   # None: every namespace
    allow_write: bool = False
    allowed_hosts: list[str] | None = None  # more Host names than loopback's and the address, see hosts()
    context: str | None = None

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


def _hostname(host: str) -> str:
    host = host.strip().lower()
    if host.startswith("["):
        return host[1:host.find("]")] if "]" in host else host
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
        if self.hosts is not None and _hostname(host) not in self.hosts and scope["path"] != "/healthz":
            response = PlainTextResponse(f"unknown host {host!r}: this dashboard answers to "
                                         f"{', '.join(sorted(self.hosts))} (kubectl hpo dashboard --allowed-host)",
                                         status_code=421)
            return await response(scope, receive, send)

        async def send_secured(message: dict) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                for name, value in SECURITY_HEADERS.items():
                    headers.setdefault(name, value)
            await send(message)

        await self.app(scope, receive, send_secured)


# --- per experiment, what the pages ask for, computed once per version --------------------------------------

@dataclass
class _Entry:
    # Three locks: the table is not kept waiting for the plots, nor the metric curves (a few
    # trials) for the study of all of them.
    rows_lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    plot_lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    curves_lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    rows_version: int = -1
    rows: list[dict] = field(default_factory=list)
    rows_json: bytes = b"[]"
    row_cache: dict[str, tuple[Any, dict, str]] = field(default_factory=dict)
    recovery_version: int = -1
    recovery_json: bytes = b"{}"
    study_version: int = -1
    study: figures.TrialStudy | None = None
    study_built: float = 0.0
    study_seconds: float = 0.0
    study_spec: dict = field(default_factory=dict)
    study_trials: list[dict] = field(default_factory=list)
    figures: dict[tuple, tuple[int, bytes]] = field(default_factory=dict)


def _versioned(figure_json: str, version: int) -> bytes:
    """The figure with the experiment version it shows (the page skips redrawing the same one)."""
    return (f'{{"version":{version},' + figure_json.lstrip()[1:]).encode()


def _compact(row: dict) -> dict:
    return {k: v for k, v in row.items() if v is not None and v != {}}


class Views:
    """The experiment page's data, cached by the experiment's version. The work runs in a worker
    thread, so the event loop goes on serving (and watching) meanwhile."""

    def __init__(self, store: Store):
        self.store = store
        self.entries: dict[Key, _Entry] = {}

    def _entry(self, key: Key) -> _Entry:
        if key not in self.entries and len(self.entries) >= 64:
            self.forget()
        return self.entries.setdefault(key, _Entry())

    @staticmethod
    def _build_rows(entry: _Entry, trials: list[dict]) -> None:
        rows, parts, cache = [], [], {}
        for t in data.creation_order(trials):
            meta = t.get("metadata") or {}
            name, version = meta.get("name", ""), meta.get("resourceVersion")
            hit = entry.row_cache.get(name)
            if hit is None or version is None or hit[0] != version:
                row = data.trial_row(t)
                hit = (version, row, json.dumps(_compact(row), separators=(",", ":")))
            cache[name] = hit
            rows.append(hit[1])
            parts.append(hit[2])
        entry.row_cache, entry.rows = cache, rows
        entry.rows_json = ("[" + ",".join(parts) + "]").encode()

    async def rows(self, key: Key) -> tuple[_Entry, int]:
        entry = self._entry(key)
        async with entry.rows_lock:
            version = self.store.version(key)
            if entry.rows_version != version:
                await anyio.to_thread.run_sync(self._build_rows, entry, self.store.trials_of(key))
                entry.rows_version = version
        return entry, version

    async def trials_json(self, key: Key) -> bytes:
        entry, _ = await self.rows(key)
        return entry.rows_json

    async def recovery_json(self, key: Key) -> bytes:
        entry, _ = await self.rows(key)
        async with entry.rows_lock:
            if entry.recovery_version != entry.rows_version:
                rows = entry.rows
                result = await anyio.to_thread.run_sync(lambda: data.recovery(rows))
                entry.recovery_json = json.dumps(result, separators=(",", ":")).encode()
                entry.recovery_version = entry.rows_version
        return entry.recovery_json

    async def figure_json(self, key: Key, kind: str, metric: str | None, chosen: tuple[str, ...]) -> bytes:
        entry = self._entry(key)
        if kind == "curves":  # a few trials: no study to share, built for each version
            async with entry.curves_lock:
                version, trials = self.store.version(key), self.store.trials_of(key)
                spec = (self.store.experiments.get(key) or {}).get("spec") or {}  # deleted meanwhile: 422
                cached = entry.figures.get((kind, metric, chosen))
                if cached is None or cached[0] != version:
                    fig = await anyio.to_thread.run_sync(
                        lambda: figures.to_json(figures.curves(spec, trials, metric, chosen)))
                    entry.figures[(kind, metric, chosen)] = (version, _versioned(fig, version))
                return entry.figures[(kind, metric, chosen)][1]
        async with entry.plot_lock:
            if entry.study is None or entry.study_version != self.store.version(key):
                # While the experiment keeps changing, rebuild at most every STUDY_MIN_AGE seconds
                # (or twice the last build's time): the answer waits, and is never older than the
                # experiment was when it was asked for.
                wait = entry.study_built + max(STUDY_MIN_AGE, 2 * entry.study_seconds) - time.monotonic()
                if entry.study is not None and wait > 0:
                    await asyncio.sleep(wait)
                version, trials = self.store.version(key), self.store.trials_of(key)
                spec = (self.store.experiments.get(key) or {}).get("spec") or {}  # deleted meanwhile: 422
                started = time.monotonic()
                entry.study = await anyio.to_thread.run_sync(figures.build_study, spec, trials)
                entry.study_built = time.monotonic()
                entry.study_seconds = entry.study_built - started
                entry.study_version = version
                entry.study_spec, entry.study_trials = spec, trials
            cached = entry.figures.get((kind,))
            if cached is None or cached[0] != entry.study_version:
                study, spec, trials = entry.study, entry.study_spec, entry.study_trials
                fig = await anyio.to_thread.run_sync(
                    lambda: figures.to_json(figures.figure(kind, spec, trials, study=study)))
                entry.figures[(kind,)] = (entry.study_version, _versioned(fig, entry.study_version))
            return entry.figures[(kind,)][1]

    async def warm(self, key: Key) -> None:
        """Starts on what the experiment page asks for, while the browser loads the page: its
        rows and recovery view first, then the study its plots share (the page asks for the plots
        once its table is drawn and plotly.js runs)."""
        try:
            await self.recovery_json(key)
            await self.figure_json(key, "history", None, ())
        except Exception:  # noqa: BLE001  the page's own requests will say what is wrong
            log.debug("warming %s failed", key, exc_info=True)

    async def warm_all(self) -> None:
        """Once the first listing is in: the rows and recovery view of every experiment, the
        largest first, so that even an experiment's first view finds its table ready."""
        await self.store.synced.wait()
        for key in sorted(self.store.experiments, key=lambda k: -len(self.store.trials.get(k, {}))):
            if key in self.store.experiments:
                try:
                    await self.recovery_json(key)
                except Exception:  # noqa: BLE001  its page's own requests will say what is wrong
                    log.debug("preparing %s failed", key, exc_info=True)

    def forget(self) -> None:
        """Drops what was computed for experiments that no longer exist."""
        for key in [k for k in self.entries if k not in self.store.experiments]:
            del self.entries[key]


# --- the app ----------------------------------------------------------------------------------------------

PAGE_PART = re.compile(r"^<!-- (title|head|header|main) -->\n", re.MULTILINE)


def render_page(name: str) -> str:
    """A page: the shell every page shares (static/page.html: the head, the top bar, the error
    box) filled with the parts of static/<name>.html (each after a line `<!-- part -->`: title,
    head for anything the page loads early, header for its crumbs, main) and its script <name>.js."""
    found = PAGE_PART.split((STATIC / f"{name}.html").read_text(encoding="utf-8"))
    parts = dict(zip(found[1::2], found[2::2]))  # found[0]: what the file says about itself
    shell = string.Template((STATIC / "page.html").read_text(encoding="utf-8"))
    return shell.substitute(title=parts["title"].strip(), head=parts.get("head", ""), header=parts["header"],
                            main=parts["main"], script=f"{name}.js")


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status, headers={"cache-control": "no-store"})


def _json_bytes(body: bytes) -> Response:
    return Response(body, media_type="application/json", headers={"cache-control": "no-store"})


def create_app(store: Store, options: Options, actions: Any = None) -> Starlette:
    """The Starlette app over `store`; `actions` (an actions.Actions) serves the write requests
    when options.allow_write is set."""
    views = Views(store)
    me: dict[str, str | None] = {}

    async def synced() -> None:
        try:
            await asyncio.wait_for(asyncio.shield(store.synced.wait()), SYNC_WAIT_SECONDS)
        except asyncio.TimeoutError:
            pass

    def experiment_key(request: Request) -> Key | Response:
        key = (request.path_params["namespace"], request.path_params["name"])
        if key not in store.experiments:
            if not store.watches(key[0]):
                return _error(404, f"this dashboard does not watch namespace {key[0]}")
            return _error(404, f"experiment {key[1]} not found in namespace {key[0]}")
        return key

    pages = {name: render_page(name) for name in ("list", "experiment")}

    async def page_list(request: Request) -> Response:
        return HTMLResponse(pages["list"])

    warming: set[asyncio.Task] = set()

    async def page_experiment(request: Request) -> Response:
        key = (request.path_params["namespace"], request.path_params["name"])
        if key in store.experiments:
            task = asyncio.create_task(views.warm(key))
            warming.add(task)
            task.add_done_callback(warming.discard)
        return HTMLResponse(pages["experiment"])

    async def plotly_js(request: Request) -> Response:
        # plotly.js from the plotly package itself: no CDN, the same version the figures are for.
        path = resources.files("plotly") / "package_data" / "plotly.min.js"
        return FileResponse(str(path), media_type="text/javascript",
                            headers={"cache-control": "public, max-age=86400"})

    async def api_config(request: Request) -> Response:
        await synced()
        return JSONResponse({"allowWrite": options.allow_write, "namespaces": options.namespaces,
                             "synced": store.synced.is_set(),
                             "context": options.context, "errors": store.errors(), "revision": store.revision})

    async def api_experiments(request: Request) -> Response:
        q = request.query_params
        try:
            query = data.parse_list_query(q.get, q.getlist("tag"))
            await synced()
            if query.mine and "user" not in me:
                me["user"] = await store.connection.whoami()
            rows = data.experiment_rows(list(store.experiments.values()), query, me.get("user"))
        except InvalidInput as e:
            return _error(400, str(e))
        return JSONResponse({"experiments": rows, "revision": store.revision, "errors": store.errors()},
                            headers={"cache-control": "no-store"})

    async def api_experiment(request: Request) -> Response:
        await synced()
        key = experiment_key(request)
        if isinstance(key, Response):
            return key
        view = data.experiment_view(store.experiments[key])
        view["version"] = store.version(key)
        return JSONResponse(view, headers={"cache-control": "no-store"})

    async def api_trials(request: Request) -> Response:
        await synced()
        key = experiment_key(request)
        return key if isinstance(key, Response) else _json_bytes(await views.trials_json(key))

    async def api_recovery(request: Request) -> Response:
        await synced()
        key = experiment_key(request)
        return key if isinstance(key, Response) else _json_bytes(await views.recovery_json(key))

    async def api_figure(request: Request) -> Response:
        await synced()
        key = experiment_key(request)
        if isinstance(key, Response):
            return key
        kind = request.path_params["kind"]
        if kind not in figures.KINDS:
            return _error(404, f"no figure {kind}: use one of {', '.join(figures.KINDS)}")
        metric = request.query_params.get("metric") or None
        chosen = tuple(n for n in (request.query_params.get("trials") or "").split(",") if n)
        try:
            return _json_bytes(await views.figure_json(key, kind, metric, chosen))
        except ValueError as e:  # a spec the models refuse: say so in the plot's place
            return _error(422, f"cannot plot this experiment: {e}")

    async def api_events(request: Request) -> Response:
        queue = store.listen()

        async def stream() -> Any:
            try:
                hello = {"revision": store.revision, "experiments": None, "errors": store.errors()}
                yield f"retry: 2000\ndata: {json.dumps(hello)}\n\n"
                while True:
                    try:
                        message = await asyncio.wait_for(queue.get(), KEEPALIVE_SECONDS)
                    except asyncio.TimeoutError:
                        yield ": keepalive\n\n"
                        continue
                    if message is None:  # the server is stopping (the page reconnects later)
                        return
                    yield f"data: {json.dumps(message)}\n\n"
            finally:
                store.unlisten(queue)

        return StreamingResponse(stream(), media_type="text/event-stream",
                                 headers={"cache-control": "no-store", "x-accel-buffering": "no"})

    async def write(request: Request, action: Callable[[Key, dict], Any]) -> Response:
        if not options.allow_write or actions is None:
            return _error(403, "this dashboard is read-only: start it with `kubectl hpo dashboard --allow-write` "
                               "to stop, resume and restart from the page")
        if request.headers.get(WRITE_HEADER) != "1" or \
                not request.headers.get("content-type", "").startswith("application/json"):
            return _error(403, f"a write request needs the header {WRITE_HEADER}: 1 and a JSON body")
        origin = request.headers.get("origin")
        if origin and _hostname(origin.split("://", 1)[-1]) != _hostname(request.headers.get("host", "")):
            return _error(403, f"a write request from another origin ({origin}) is refused")
        key = (request.path_params["namespace"], request.path_params["name"])
        if not store.watches(key[0]):
            return _error(404, f"this dashboard does not watch namespace {key[0]}")
        try:
            body = await request.json()
        except ValueError:
            return _error(400, "the body is not JSON")
        try:
            result = await anyio.to_thread.run_sync(action, key, body if isinstance(body, dict) else {})
        except actions.error_types() as e:
            status = 403 if type(e).__name__ == "PermissionDenied" else 404 if type(e).__name__ == "NotFound" else 400
            return _error(status, str(e))
        return JSONResponse(result, headers={"cache-control": "no-store"})

    async def api_stop(request: Request) -> Response:
        return await write(request, lambda key, body: actions.set_suspend(key[0], key[1], True))

    async def api_resume(request: Request) -> Response:
        return await write(request, lambda key, body: actions.set_suspend(key[0], key[1], False))

    async def api_restart(request: Request) -> Response:
        return await write(request, lambda key, body: actions.restart_trials(
            key[0], key[1], [str(n) for n in body.get("trials") or [] if isinstance(n, str)]))

    async def healthz(request: Request) -> Response:
        return PlainTextResponse("ok")

    routes = [
        Route("/", page_list),
        Route("/experiments/{namespace}/{name}", page_experiment),
        Route("/healthz", healthz),
        Route("/static/plotly.min.js", plotly_js),
        Mount("/static", StaticFiles(directory=STATIC), name="static"),
        Route("/api/config", api_config),
        Route("/api/events", api_events),
        Route("/api/experiments", api_experiments),
        Route("/api/experiments/{namespace}/{name}", api_experiment),
        Route("/api/experiments/{namespace}/{name}/trials", api_trials),
        Route("/api/experiments/{namespace}/{name}/recovery", api_recovery),
        Route("/api/experiments/{namespace}/{name}/figures/{kind}", api_figure),
        Route("/api/experiments/{namespace}/{name}/stop", api_stop, methods=["POST"]),
        Route("/api/experiments/{namespace}/{name}/resume", api_resume, methods=["POST"]),
        Route("/api/experiments/{namespace}/{name}/restart-trials", api_restart, methods=["POST"]),
    ]
    app = Starlette(routes=routes)
    app.add_middleware(Guard, hosts=options.hosts())
    app.state.views = views
    return app


async def _prepare(app: Starlette) -> None:
    await app.state.views.warm_all()


# --- running it -----------------------------------------------------------------------------------------------

class _Server(uvicorn.Server):
    """uvicorn's server, stopped by SIGINT or SIGTERM without raising the signal again once it has
    stopped (uvicorn does, which would cut the store's and the API client's cleanup short), and
    ending the pages' event streams first (else the graceful stop waits for them, then cancels
    them with a traceback)."""

    def __init__(self, config: uvicorn.Config, store: Store):
        super().__init__(config)
        self.store = store
        self.loop = asyncio.get_running_loop()

    def handle_exit(self, sig: int, frame: Any) -> None:
        self.loop.call_soon_threadsafe(self.store.close_listeners)
        if self.should_exit and sig == signal.SIGINT:
            self.force_exit = True  # a second Ctrl-C: stop now
        else:
            self.should_exit = True


def bind(address: str, port: int) -> socket.socket:
    """The listening socket, bound before the server starts: port 0 picks a free port, and the
    URL printed is the one that works."""
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((address, port))
    sock.listen(128)
    sock.setblocking(False)
    return sock


def url_of(sock: socket.socket) -> str:
    host, port = sock.getsockname()[:2]
    if host in ("0.0.0.0", "::"):
        host = "127.0.0.1"
    return f"http://[{host}]:{port}/" if ":" in host else f"http://{host}:{port}/"


async def serve(options: Options, connection: Connection, sock: socket.socket, *,
                actions: Any = None, ready: Callable[[str], Awaitable[None] | None] | None = None) -> None:
    """Watches the cluster and serves the pages on `sock` until interrupted (SIGINT, SIGTERM)."""
    store = Store(connection, options.namespaces)
    await store.start()
    app = create_app(store, options, actions)
    server = _Server(uvicorn.Config(app, log_level="warning", access_log=False, lifespan="off",
                                    timeout_graceful_shutdown=2, proxy_headers=False), store)
    preparing = asyncio.create_task(_prepare(app))
    try:
        if ready is not None:
            result = ready(url_of(sock))
            if asyncio.iscoroutine(result):
                await result
        await server.serve(sockets=[sock])
    finally:
        preparing.cancel()
        await store.stop()
        await connection.close()


async def start(options: Options, kubeconfig: str | None, namespace: str | None, all_namespaces: bool, *,
                actions: Any = None, ready: Callable[[str], Any] | None = None) -> None:
    """Connects (kubectl's rules), binds, and serves: what `kubectl hpo dashboard` runs."""
    connection = await connect(kubeconfig, options.context)
    if options.namespaces is None and not all_namespaces:
        options.namespaces = [namespace or connection.namespace]
    sock = bind(options.address, options.port)
    await serve(options, connection, sock, actions=actions, ready=ready)
