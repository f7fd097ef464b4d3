"""The admission webhook that records who writes Experiments and Trials (core/authorship.py decides).

Every replica serves it, the leader and the standbys alike, from the moment the process starts: the
API server calls it for every user's write of an Experiment or Trial (the chart's
MutatingWebhookConfiguration fails closed), so it must not wait for an election. It runs on a thread
of its own with its own event loop, so that neither kopf's loop nor the election's wait holds it up.

HPO_ADMISSION_PORT (0 or unset: no webhook), HPO_ADMISSION_CERT_FILE and HPO_ADMISSION_KEY_FILE
(its TLS certificate and key, which the API server is told to trust), HPO_AUTHOR_KEY_FILE (the
signing key), and HPO_OPERATOR_USERNAME (the operator's own user, whose writes are left alone;
unset: asked of the API server once, with a SelfSubjectReview).
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import ssl
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from aiohttp import web

from hpo_operator.core.authorship import review_response
from hpo_operator.kube.client import connect

log = logging.getLogger(__name__)

PATH = "/author"
# An AdmissionReview of one Experiment or Trial; anything larger is not one of ours to read.
MAX_REQUEST_BYTES = 3 << 20


@dataclass(frozen=True)
class Settings:
    port: int
    cert_file: str
    key_file: str
    author_key: bytes
    operator: str | None  # None: ask the API server

    @classmethod
    def from_env(cls) -> Settings | None:
        port = int(os.environ.get("HPO_ADMISSION_PORT") or 0)
        if not port:
            return None
        missing = [
            v
            for v in ("HPO_ADMISSION_CERT_FILE", "HPO_ADMISSION_KEY_FILE", "HPO_AUTHOR_KEY_FILE")
            if not os.environ.get(v)
        ]
        if missing:
            raise ValueError(f"HPO_ADMISSION_PORT is set but {', '.join(missing)} not")
        author_key = Path(os.environ["HPO_AUTHOR_KEY_FILE"]).read_bytes().strip()
        if not author_key:
            raise ValueError(f"HPO_AUTHOR_KEY_FILE {os.environ['HPO_AUTHOR_KEY_FILE']} is empty")
        return cls(
            port,
            os.environ["HPO_ADMISSION_CERT_FILE"],
            os.environ["HPO_ADMISSION_KEY_FILE"],
            author_key,
            os.environ.get("HPO_OPERATOR_USERNAME") or None,
        )


async def own_username() -> str:
    """The operator's user name as the API server sees it (a SelfSubjectReview)."""
    api = await connect()
    try:
        answer = await api.self_review()
    finally:
        await api.close()
    name = ((answer.get("status") or {}).get("userInfo") or {}).get("username")
    if not name:
        raise RuntimeError("the API server's SelfSubjectReview named no user")
    return str(name)


def app(settings: Settings, operator: str) -> web.Application:
    async def author(request: web.Request) -> web.Response:
        try:
            review = json.loads(await request.read())
        except ValueError:
            review = None
        if not isinstance(review, dict):
            return web.json_response({"message": "not an AdmissionReview"}, status=400)
        return web.json_response(review_response(review, settings.author_key, operator))

    async def healthz(_: web.Request) -> web.Response:
        return web.Response(text="ok")

    application = web.Application(client_max_size=MAX_REQUEST_BYTES)
    application.router.add_post(PATH, author)
    application.router.add_get("/healthz", healthz)
    return application


async def serve(settings: Settings, started: threading.Event) -> None:
    operator = settings.operator or await own_username()
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(settings.cert_file, settings.key_file)
    runner = web.AppRunner(app(settings, operator), access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "0.0.0.0", settings.port, ssl_context=context).start()
    log.info("serving the author admission webhook on port %d (the operator's own writes: %s)", settings.port, operator)
    started.set()
    await asyncio.Event().wait()  # until the process ends


def start(settings: Settings | None = None, timeout: float = 30.0) -> threading.Thread | None:
    """Starts the webhook on a daemon thread (none when HPO_ADMISSION_PORT is unset) and waits until
    it listens: an operator that cannot serve it fails at its start, visibly, rather than leaving
    every user's write refused."""
    settings = settings or Settings.from_env()
    if settings is None:
        return None
    started = threading.Event()
    failure: list[BaseException] = []

    def run() -> None:
        try:
            asyncio.run(serve(settings, started))
        except BaseException as e:  # said by the caller, which is waiting for it
            failure.append(e)
            started.set()

    thread = threading.Thread(target=run, name="admission webhook", daemon=True)
    thread.start()
    if not started.wait(timeout):
        raise RuntimeError(f"the admission webhook did not start within {timeout:g} s")
    if failure:
        raise RuntimeError(f"the admission webhook could not start: {failure[0]!r}") from failure[0]
    return thread


def drain(seconds: float | None = None) -> None:
    """Waits while the webhook's thread goes on answering, before the process exits: a pod being
    deleted stays in its Service's endpoints for a moment, and a call routed there meanwhile would
    otherwise fail (the chart's webhook fails closed: a user's write refused). HPO_ADMISSION_DRAIN_SECONDS,
    3 by default; the pod's grace period (30 s) covers it."""
    if seconds is None:
        seconds = float(os.environ.get("HPO_ADMISSION_DRAIN_SECONDS", "3"))
    if seconds > 0:
        log.info("answering admission calls %g s more before exiting", seconds)
        time.sleep(seconds)
