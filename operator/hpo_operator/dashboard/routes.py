"""The dashboard's pages and its JSON API over the in-memory copy of the cluster:

    GET  /                                         the experiment list (static/list.html in page.html)
    GET  /experiments/NS/NAME                      an experiment (static/experiment.html in page.html)
    GET  /api/config                               scope, context, read-only or not
    GET  /api/experiments?name=&status=&...        list rows, with `kubectl hpo list`'s filters
    GET  /api/experiments/NS/NAME                  summary, spec, conditions, history, best trial
    GET  /api/experiments/NS/NAME/trials           one row per trial
    GET  /api/experiments/NS/NAME/recovery         per configuration, its attempts
    GET  /api/experiments/NS/NAME/figures/KIND     a plotly figure (history, parallel, pareto, ...);
                                                   ?metric= the objective it shows, of several
    GET  /api/events                               server-sent events: which experiments changed
    POST /api/experiments/NS/NAME/stop|resume      with --allow-write only (403 otherwise)
    POST /api/experiments/NS/NAME/restart-trials   {"trials": [...]}, with --allow-write only

The answers are built from the store (cluster.py), the experiment page's through the PageCache
(cache.py); guards.py says which writes are refused. With authentication on (gate.py), each
answer is cut to the namespaces the requesting user may list experiments in, and a namespace they
may not gets 403 (before anything about it, even whether it exists, is said).
"""

from __future__ import annotations

import asyncio
import json
import re
import string
from collections.abc import Callable
from importlib import resources
from pathlib import Path
from typing import Any

import anyio.to_thread
from starlette.requests import Request
from starlette.responses import FileResponse, HTMLResponse, JSONResponse, PlainTextResponse, Response, StreamingResponse
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles

from hpo_operator.client.errors import InvalidInput

from . import data, figures
from .cache import PageCache
from .cluster import Key, Store
from .gate import Access
from .guards import Options, write_refusal
from .study import UnknownObjective

STATIC = Path(__file__).parent / "static"
KEEPALIVE_SECONDS = 15
_KEEPALIVE: dict = {}  # no message for KEEPALIVE_SECONDS: a comment line keeps the stream open
SYNC_WAIT_SECONDS = 10  # a request made while the first listing runs waits for it this long

PAGE_PART = re.compile(r"^<!-- (title|head|header|main) -->\n", re.MULTILINE)


def render_page(name: str) -> str:
    """A page: the shell every page shares (static/page.html: the head, the top bar, the error
    box) filled with the parts of static/<name>.html (each after a line `<!-- part -->`: title,
    head for anything the page loads early, header for its crumbs, main) and its script <name>.js."""
    found = PAGE_PART.split((STATIC / f"{name}.html").read_text(encoding="utf-8"))
    parts = dict(zip(found[1::2], found[2::2], strict=False))  # found[0]: what the file says about itself
    shell = string.Template((STATIC / "page.html").read_text(encoding="utf-8"))
    return shell.substitute(
        title=parts["title"].strip(),
        head=parts.get("head", ""),
        header=parts["header"],
        main=parts["main"],
        script=f"{name}.js",
    )


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status, headers={"cache-control": "no-store"})


def _json_bytes(body: bytes) -> Response:
    return Response(body, media_type="application/json", headers={"cache-control": "no-store"})


def routes(store: Store, options: Options, cache: PageCache, access: Access, actions: Any = None) -> list[BaseRoute]:
    """The routes over `store`, for what `access` lets the requesting user read; `actions` (an
    actions.Actions) serves the write requests when options.allow_write is set."""
    me: dict[str, str | None] = {}

    async def synced() -> None:
        try:
            await asyncio.wait_for(asyncio.shield(store.synced.wait()), SYNC_WAIT_SECONDS)
        except TimeoutError:
            pass

    async def experiment_key(request: Request) -> Key | Response:
        key = (request.path_params["namespace"], request.path_params["name"])
        refusal = await access.refusal(request, key[0])
        if refusal is not None:
            return _error(refusal.status, refusal.reason)
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
        refusal = await access.refusal(request, key[0])
        if refusal is not None:  # the page shows why: its own API calls get the same refusal
            return HTMLResponse(pages["experiment"], status_code=refusal.status)
        if key in store.experiments:
            task = asyncio.create_task(cache.warm(key))
            warming.add(task)
            task.add_done_callback(warming.discard)
        return HTMLResponse(pages["experiment"])

    async def plotly_js(request: Request) -> Response:
        # plotly.js from the plotly package itself: no CDN, the same version the figures are for.
        path = resources.files("plotly") / "package_data" / "plotly.min.js"
        return FileResponse(str(path), media_type="text/javascript", headers={"cache-control": "public, max-age=86400"})

    async def api_config(request: Request) -> Response:
        await synced()
        shown = None if options.namespaces is None else await access.visible(request, options.namespaces)
        identity = access.identity(request)
        return JSONResponse(
            {
                "allowWrite": options.allow_write,
                "namespaces": options.namespaces
                if shown is None
                else [n for n in options.namespaces or [] if n in shown],
                "synced": store.synced.is_set(),
                "context": options.context,
                "errors": await access.errors(request, store.feed_errors()),
                "auth": options.auth.mode,
                "user": identity.user if identity else None,
            },
            headers={"cache-control": "no-store"},
        )

    async def api_experiments(request: Request) -> Response:
        q = request.query_params
        try:
            query = data.parse_list_query(q.get, q.getlist("tag"))
            await synced()
            identity = access.identity(request)
            if query.mine and identity is None and "user" not in me:
                me["user"] = await store.connection.whoami()
            user = identity.user if identity is not None else me.get("user")
            shown = await access.visible(request, {ns for ns, _ in store.experiments})
            experiments = [e for k, e in list(store.experiments.items()) if shown is None or k[0] in shown]
            rows = data.experiment_rows(experiments, query, user)
        except InvalidInput as e:
            return _error(400, str(e))
        return JSONResponse(
            {"experiments": rows, "errors": await access.errors(request, store.feed_errors())},
            headers={"cache-control": "no-store"},
        )

    async def api_experiment(request: Request) -> Response:
        await synced()
        key = await experiment_key(request)
        if isinstance(key, Response):
            return key
        view = data.experiment_view(store.experiments[key], store.trials_of(key))
        view["version"] = store.version(key)
        return JSONResponse(view, headers={"cache-control": "no-store"})

    async def api_trials(request: Request) -> Response:
        await synced()
        key = await experiment_key(request)
        return key if isinstance(key, Response) else _json_bytes(await cache.trials_json(key))

    async def api_recovery(request: Request) -> Response:
        await synced()
        key = await experiment_key(request)
        return key if isinstance(key, Response) else _json_bytes(await cache.recovery_json(key))

    async def api_figure(request: Request) -> Response:
        await synced()
        key = await experiment_key(request)
        if isinstance(key, Response):
            return key
        kind = request.path_params["kind"]
        if kind not in figures.KINDS:
            return _error(404, f"no figure {kind}: use one of {', '.join(figures.KINDS)}")
        metric = request.query_params.get("metric") or None
        chosen = tuple(n for n in (request.query_params.get("trials") or "").split(",") if n)[: figures.MAX_CURVES]
        try:
            return _json_bytes(await cache.figure_json(key, kind, metric, chosen))
        except UnknownObjective as e:
            return _error(400, str(e))
        except ValueError as e:  # a spec the models refuse: say so in the plot's place
            return _error(422, f"cannot plot this experiment: {e}")

    async def api_events(request: Request) -> Response:
        queue = store.listen()

        async def stream() -> Any:
            try:
                hello = await access.event(request, {"experiments": None}, store.feed_errors())
                yield f"retry: 2000\ndata: {json.dumps(hello)}\n\n"
                errors = hello["errors"]
                while True:
                    try:
                        message = await asyncio.wait_for(queue.get(), KEEPALIVE_SECONDS)
                    except TimeoutError:
                        message = _KEEPALIVE
                    # The server is stopping, or the user's session or token has ended: the page
                    # reconnects later, and is then answered as whoever it is by then.
                    if message is None or not access.still_valid(request):
                        return
                    if message is _KEEPALIVE:
                        yield ": keepalive\n\n"
                        continue
                    # Only what this user may read, and nothing at all if that is nothing new.
                    message = await access.event(request, message, store.feed_errors())
                    if message["experiments"] == [] and message["errors"] == errors:
                        continue
                    errors = message["errors"]
                    yield f"data: {json.dumps(message)}\n\n"
            finally:
                store.unlisten(queue)

        return StreamingResponse(
            stream(), media_type="text/event-stream", headers={"cache-control": "no-store", "x-accel-buffering": "no"}
        )

    async def write(request: Request, action: Callable[[Key, dict], Any]) -> Response:
        refusal = write_refusal(request, options.allow_write and actions is not None)
        if refusal is not None:
            return _error(403, refusal)
        key = (request.path_params["namespace"], request.path_params["name"])
        refusal = await access.refusal(request, key[0])  # (writes run in mode none only: see server.py)
        if refusal is not None:
            return _error(refusal.status, refusal.reason)
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
        return await write(
            request,
            lambda key, body: actions.restart_trials(
                key[0], key[1], [str(n) for n in body.get("trials") or [] if isinstance(n, str)]
            ),
        )

    async def healthz(request: Request) -> Response:
        return PlainTextResponse("ok")

    return [
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
