"""The dashboard's web server: the app (routes.py's pages and API, behind gate.py's Gate and
guards.py's Guard, with cache.py's PageCache), its listening socket, and serving with uvicorn
until interrupted.
"""

from __future__ import annotations

import asyncio
import signal
import socket
from collections.abc import Awaitable, Callable
from typing import Any

import uvicorn
from starlette.applications import Starlette

from .auth import Sessions
from .cache import PageCache
from .cluster import Connection, Store, connect
from .gate import Access, Gate
from .guards import Guard, Options
from .reviews import Reviewer, api_asker
from .routes import render_page, routes


def create_app(store: Store, options: Options, actions: Any = None, reviewer: Reviewer | None = None) -> Starlette:
    """The Starlette app over `store`; `actions` (an actions.Actions) serves the write requests
    when options.allow_write is set; `reviewer` answers who a token is and what a user may read
    (by default the API server, through the store's connection) when options.auth is on."""
    auth = options.auth
    if auth.on and options.allow_write:
        # The actions run with the dashboard's own credentials: for its user's own, locally, only.
        raise ValueError("write actions are for `kubectl hpo dashboard --allow-write` (auth mode none) only")
    if auth.on and reviewer is None:
        reviewer = Reviewer(api_asker(store.connection.api), auth)
    cache = PageCache(store)
    app = Starlette(routes=routes(store, options, cache, Access(reviewer if auth.on else None), actions))
    sessions = Sessions(auth.session_seconds) if auth.mode == "token" else None
    app.add_middleware(Gate, settings=auth, reviewer=reviewer, sessions=sessions, sign_in=render_page("signin"))
    app.add_middleware(Guard, hosts=options.hosts())  # the outermost: the Host check first, headers on every answer
    app.state.cache = cache
    return app


async def _prepare(app: Starlette) -> None:
    await app.state.cache.warm_all()


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


async def serve(
    options: Options,
    connection: Connection,
    sock: socket.socket,
    *,
    actions: Any = None,
    ready: Callable[[str], Awaitable[None] | None] | None = None,
) -> None:
    """Watches the cluster and serves the pages on `sock` until interrupted (SIGINT, SIGTERM)."""
    store = Store(connection, options.namespaces)
    await store.start()
    app = create_app(store, options, actions)
    server = _Server(
        uvicorn.Config(
            app, log_level="warning", access_log=False, lifespan="off", timeout_graceful_shutdown=2, proxy_headers=False
        ),
        store,
    )
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


async def start(
    options: Options,
    kubeconfig: str | None,
    namespace: str | None,
    all_namespaces: bool,
    *,
    actions: Any = None,
    ready: Callable[[str], Any] | None = None,
) -> None:
    """Connects (kubectl's rules), binds, and serves: what `kubectl hpo dashboard` runs."""
    connection = await connect(kubeconfig, options.context)
    if options.namespaces is None and not all_namespaces:
        options.namespaces = [namespace or connection.namespace]
    sock = bind(options.address, options.port)
    await serve(options, connection, sock, actions=actions, ready=ready)
