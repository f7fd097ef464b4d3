"""Fault injection for integration tests: what goes wrong between an operator and its API server.

The operator under test (tests/support/kube.py OperatorProcess) reaches the API server through a
kubeconfig, so faults are placed on that path:

- `Relay`: a TCP relay in front of any API server (TLS passes through untouched). `drop()` resets
  every open connection, `freeze()` leaves them open but silent (a half-open link), `thaw()` lets
  bytes flow again. It needs nothing but a kubeconfig, so it works against any cluster (kind too).
- `ApiServer`: a second kube-apiserver on the local control plane's etcd, started with the main
  one's flags, that a test may kill, restart, pause (SIGSTOP) and resume without disturbing the
  main API server that everything else (and every other test) uses.
- `Throttle`: an HTTPS proxy in front of any API server that answers watches 429 Too Many Requests
  on demand (an API server shedding load); like the Relay, it needs nothing but a kubeconfig.
- `Etcd`: the local control plane's etcd itself: kill, restart, current revision and compaction
  (to provoke 410 Gone on watches that resume from an old resourceVersion).

`ApiServer` and `Etcd` signal processes of the project's local control plane (hack/cluster.sh);
`local_cluster()` tells whether the tests' kubeconfig is that cluster, and says why not otherwise
(tests skip with that reason).
"""

from __future__ import annotations

import asyncio
import base64
import ipaddress
import json
import os
import signal
import socket
import ssl
import struct
import subprocess
import tempfile
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import yaml
from aiohttp import web

REPO = Path(__file__).resolve().parents[2]


# --- The local control plane and its processes ------------------------------------------------


class NotLocalCluster(Exception):
    """The kubeconfig is not the local control plane's, or that control plane is not running: its
    processes cannot be signalled. The message says which, for a test's skip reason."""


@dataclass(frozen=True)
class LocalCluster:
    """The local control plane of hack/cluster.sh: its state folder (HPO_CLUSTER_DIR, default
    .cluster) with pid files in run/, logs in logs/ and the admin kubeconfig."""

    state: Path

    @property
    def kubeconfig(self) -> Path:
        return self.state / "kubeconfig"

    def pid_file(self, name: str) -> Path:
        return self.state / "run" / f"{name}.pid"

    def log_file(self, name: str) -> Path:
        return self.state / "logs" / f"{name}.log"

    def pid(self, name: str) -> int:
        """The pid of component `name` (kube-apiserver, etcd, ...), if it runs; else NotLocalCluster."""
        try:
            pid = int(self.pid_file(name).read_text().strip())
        except (OSError, ValueError):
            raise NotLocalCluster(
                f"the local control plane has no {name} running "
                f"(no pid file {self.pid_file(name)}); start it with hack/cluster.sh up"
            ) from None
        if not _alive(pid):
            raise NotLocalCluster(
                f"the local control plane's {name} (pid {pid}, {self.pid_file(name)}) "
                "is not running; start it with hack/cluster.sh up"
            )
        return pid


def cluster_state_dir() -> Path:
    """Where hack/cluster.sh keeps its state (hack/lib/paths.sh: HPO_CLUSTER_DIR, default .cluster)."""
    return Path(os.environ.get("HPO_CLUSTER_DIR") or REPO / ".cluster").resolve()


def local_cluster(kubeconfig: str | os.PathLike) -> LocalCluster:
    """The local control plane, when `kubeconfig` is its kubeconfig and its API server and etcd
    run as processes this user can signal. Raises NotLocalCluster, saying why, otherwise: with
    HPO_KUBECONFIG naming another cluster (kind, a remote one), only relay tests can run."""
    cluster = LocalCluster(cluster_state_dir())
    if not cluster.kubeconfig.exists() or not _same_file(kubeconfig, cluster.kubeconfig):
        raise NotLocalCluster(
            f"the tests' kubeconfig ({kubeconfig}) is not the local control plane's "
            f"({cluster.kubeconfig}): this needs processes of hack/cluster.sh's cluster "
            "to signal (unset HPO_KUBECONFIG to use it)"
        )
    for name in ("kube-apiserver", "etcd"):
        pid = cluster.pid(name)
        if not os.access(f"/proc/{pid}/cmdline", os.R_OK) or not _cmdline(pid):
            raise NotLocalCluster(f"cannot read the command line of the local {name} (pid {pid})")
    return cluster


def _same_file(a: str | os.PathLike, b: str | os.PathLike) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False


def _alive(pid: int) -> bool:
    """Whether `pid` runs. A zombie counts as gone: a component started by hack/cluster.sh is
    reparented once that script exits, and whoever reaps it may never do so, yet its ports and
    files are released as soon as it dies."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    # The state follows the command name, which is in parentheses and may itself hold spaces.
    return stat.rsplit(")", 1)[1].split()[0] not in ("Z", "X")


def _wait_gone(pid: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while _alive(pid):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def _cmdline(pid: int) -> list[str]:
    raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    return [a.decode() for a in raw.split(b"\0")[:-1]] if raw else []


@dataclass(frozen=True)
class _Launch:
    """How a process was started, read back from /proc: what a copy or a restart needs to be
    the same (relative paths in flags resolve against its working directory)."""

    argv: list[str]
    cwd: str
    env: dict[str, str]

    @classmethod
    def of(cls, pid: int) -> _Launch:
        argv = _cmdline(pid)
        # procs.sh runs components under setsid, which execs them in place; had it forked, the
        # pid would be setsid's and its arguments the component's command line.
        if argv and os.path.basename(argv[0]) == "setsid":
            argv = argv[1:]
            while argv and argv[0].startswith("-"):  # setsid's own options
                argv = argv[1:]
        cwd = os.readlink(f"/proc/{pid}/cwd")
        try:
            raw = Path(f"/proc/{pid}/environ").read_bytes()
            env = dict(item.decode().split("=", 1) for item in raw.split(b"\0") if b"=" in item)
        except OSError:
            env = dict(os.environ)
        return cls(argv, cwd, env)


Flag = tuple[str, str | None]


def parse_flags(args: Sequence[str]) -> list[Flag]:
    """`--name=value`, `--name value` and bare `--name` (a boolean) into (name, value) pairs, in
    order. A value is the next argument when it does not start with '-': Kubernetes components
    and etcd take no positional arguments, so a bare flag is always followed by another flag."""
    flags: list[Flag] = []
    i = 0
    while i < len(args):
        arg = args[i]
        if not arg.startswith("-"):
            raise ValueError(f"unexpected positional argument {arg!r} in {list(args)}")
        name, eq, value = arg.lstrip("-").partition("=")
        if eq:
            flags.append((name, value))
        elif i + 1 < len(args) and not args[i + 1].startswith("-"):
            flags.append((name, args[i + 1]))
            i += 1
        else:
            flags.append((name, None))
        i += 1
    return flags


def render_flags(flags: Sequence[Flag]) -> list[str]:
    # Always `--name=value`: unambiguous for booleans too (`--profiling=false`).
    return [f"--{name}" if value is None else f"--{name}={value}" for name, value in flags]


def replace_flags(flags: Sequence[Flag], overrides: Sequence[Flag]) -> list[Flag]:
    """`flags` with every flag named in `overrides` replaced by the overrides' values (all of them,
    for flags that may repeat), which come last: a flag is never passed twice with two values."""
    names = {name for name, _ in overrides}
    return [f for f in flags if f[0] not in names] + list(overrides)


def flag_value(flags: Sequence[Flag], name: str) -> str | None:
    values = [value for n, value in flags if n == name]
    return values[-1] if values else None


def _tail(path: Path, lines: int = 20) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return f"(no log at {path})"
    return "\n".join(line[:400] for line in text.splitlines()[-lines:])


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# --- Kubeconfigs ------------------------------------------------------------------------------


def _load_kubeconfig(path: str | os.PathLike) -> dict:
    with open(path) as f:
        return yaml.safe_load(f)


def _current(config: dict, kind: str) -> dict:
    """The current context's cluster (kind "cluster") or user (kind "user") entry, as stored."""
    context_name = config.get("current-context")
    contexts = {c["name"]: c["context"] for c in config.get("contexts", [])}
    if context_name not in contexts:
        raise ValueError(f"the kubeconfig has no current context ({context_name!r})")
    wanted = contexts[context_name][kind]
    for entry in config.get(f"{kind}s", []):
        if entry["name"] == wanted:
            return entry[kind]
    raise ValueError(f"the kubeconfig's current context names {kind} {wanted!r}, which it does not define")


def kubeconfig_server(kubeconfig: str | os.PathLike) -> str:
    """The server URL of the kubeconfig's current context."""
    return _current(_load_kubeconfig(kubeconfig), "cluster")["server"]


def write_kubeconfig(
    source: str | os.PathLike, dest: str | os.PathLike, server: str, tls_server_name: str | None = None
) -> Path:
    """A copy of kubeconfig `source` whose current context's cluster is reached at `server`.

    The API server's certificate must still be checked against its own name: `tls_server_name`
    (the kubeconfig's tls-server-name) gives it when `server` names another host. Files the source
    names by relative path are made absolute, since those resolve against the kubeconfig's folder."""
    config = _load_kubeconfig(source)
    base = Path(source).resolve().parent
    cluster = _current(config, "cluster")
    cluster["server"] = server
    if tls_server_name:
        cluster["tls-server-name"] = tls_server_name
    user = _current(config, "user")
    for entry, key in (
        (cluster, "certificate-authority"),
        (user, "client-certificate"),
        (user, "client-key"),
        (user, "tokenFile"),
    ):
        if entry.get(key) and not os.path.isabs(entry[key]):
            entry[key] = str(base / entry[key])
    dest = Path(dest)
    dest.write_text(yaml.safe_dump(config))
    dest.chmod(0o600)  # it holds credentials
    return dest


def _admin_tls(kubeconfig: str | os.PathLike) -> ssl.SSLContext:
    """A TLS context that trusts the kubeconfig's CA and presents its client certificate: what
    /readyz of a local API server is asked with."""
    config = _load_kubeconfig(kubeconfig)
    cluster, user = _current(config, "cluster"), _current(config, "user")
    context = ssl.create_default_context(cadata=base64.b64decode(cluster["certificate-authority-data"]).decode())
    # The ssl module loads client certificates only from files; they are read at once, so the
    # files live only for the duration of the call.
    with tempfile.TemporaryDirectory() as folder:
        cert, key = Path(folder, "admin.crt"), Path(folder, "admin.key")
        cert.write_bytes(base64.b64decode(user["client-certificate-data"]))
        key.write_bytes(base64.b64decode(user["client-key-data"]))
        context.load_cert_chain(cert, key)
    return context


# --- A second kube-apiserver ------------------------------------------------------------------


def _wait_up(
    proc: subprocess.Popen,
    up: Callable[[], bool],
    timeout: float,
    what: str,
    log_path: Path,
    on_timeout: Callable[[], None] | None = None,
) -> None:
    """Waits until `up()`; a process that exits first, or a timeout, raises with its log's end."""
    deadline = time.monotonic() + timeout
    while not up():
        if proc.poll() is not None:
            raise StartError(f"{what} exited with {proc.returncode}; last lines of {log_path}:\n{_tail(log_path)}")
        if time.monotonic() > deadline:
            if on_timeout is not None:
                on_timeout()
            raise StartError(f"{what} was not ready after {timeout}s; last lines of {log_path}:\n{_tail(log_path)}")
        time.sleep(0.2)


class StartError(RuntimeError):
    """A process did not become ready; the message holds the last lines of its log."""


class ApiServer:
    """A second kube-apiserver on the local control plane's etcd, for a test to break at will.

    The main API server is shared by the controllers, KWOK and every test running at the time, so
    it is never killed; this one, started with exactly its flags (so the same certificates, service
    account keys, admission and storage settings) but its own `--secure-port`, serves the same
    objects, as in an HA control plane. Point the operator at it with `write_kubeconfig()`.

    `extra_flags` (`["--watch-cache=false"]`, `--name=value` or `--name value`) replace the main
    server's flags of the same name. Its output goes to `log_path`, appended across restarts.
    """

    def __init__(
        self,
        cluster: LocalCluster,
        log_path: str | os.PathLike,
        extra_flags: Sequence[str] = (),
        *,
        ready_timeout: float = 90,
    ):
        self.cluster = cluster
        self.log_path = Path(log_path)
        self.ready_timeout = ready_timeout
        main = _Launch.of(cluster.pid("kube-apiserver"))
        self.port = _free_port()
        flags = parse_flags(main.argv[1:])
        # Both servers run on one host, so both take the identity Lease named after the host name
        # (kube-system/apiserver-<hash>): this one would delete the main one's Lease when it starts
        # and again when it stops gracefully (the main one recreates it within its 10 s renewal).
        # Without the APIServerIdentity gate (beta, on by default; only alpha features use the
        # identity) it leaves that Lease alone; the caller's --feature-gates still wins.
        gates = [
            g
            for g in (flag_value(flags, "feature-gates") or "").split(",")
            if g and not g.startswith("APIServerIdentity=")
        ]
        flags = replace_flags(flags, [("feature-gates", ",".join([*gates, "APIServerIdentity=false"]))])
        flags = replace_flags(flags, [*parse_flags(list(extra_flags)), ("secure-port", str(self.port))])
        self.argv = [main.argv[0], *render_flags(flags)]
        self._cwd, self._env = main.cwd, main.env
        self._tls = _admin_tls(cluster.kubeconfig)
        self._proc: subprocess.Popen | None = None
        self._paused = False
        self._starts = 0

    @property
    def url(self) -> str:
        # Its serving certificate names IP 127.0.0.1 (hack/cluster.sh), whatever the port.
        return f"https://127.0.0.1:{self.port}"

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc else None

    def start(self, timeout: float | None = None) -> None:
        """Starts it and waits until /readyz says ok (etcd reached, informers synced, post-start
        hooks done); StartError, with the log's last lines, if it exits or is not ready in time."""
        if self.running:
            raise RuntimeError(f"the API server on port {self.port} is already running (pid {self._proc.pid})")
        self._starts += 1
        with open(self.log_path, "a") as log:
            log.write(f"--- start {self._starts}: {' '.join(self.argv)}\n")
            log.flush()
            # Same process group as the tests: a Ctrl-C stops it too, as it belongs to the test.
            self._proc = subprocess.Popen(
                self.argv, cwd=self._cwd, env=self._env, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT
            )
        self._paused = False
        timeout = self.ready_timeout if timeout is None else timeout
        _wait_up(
            self._proc,
            self.ready,
            timeout,
            f"the second kube-apiserver (port {self.port})",
            self.log_path,
            on_timeout=self.stop,
        )

    def ready(self, timeout: float = 2) -> bool:
        """Whether /readyz answers ok within `timeout` seconds (False while paused or dead)."""
        try:
            with urllib.request.urlopen(f"{self.url}/readyz", context=self._tls, timeout=timeout) as response:
                return response.status == 200 and response.read().strip() == b"ok"
        except (OSError, urllib.error.URLError, ssl.SSLError):  # refused, timed out, not ready (500)
            return False

    def kill(self) -> None:
        """SIGKILL, as a crash: no graceful shutdown, its connections reset. Waits for the exit."""
        if self._proc is None or self._proc.poll() is not None:
            return
        self._proc.kill()  # a stopped process dies of SIGKILL too
        self._proc.wait(timeout=30)
        self._paused = False

    def restart(self, timeout: float | None = None) -> None:
        """Starts it again with the same flags on the same port (after a kill(); a running one is
        killed first). Clients keep their kubeconfig."""
        self.kill()
        self.start(timeout)

    def pause(self) -> None:
        """SIGSTOP: its sockets stay open and connections are accepted by the kernel, but nothing
        answers, as with a server stuck in a long GC pause or a frozen VM."""
        assert self.running, "the API server is not running"
        self._proc.send_signal(signal.SIGSTOP)
        self._paused = True

    def resume(self) -> None:
        """SIGCONT after pause()."""
        if self.running:
            self._proc.send_signal(signal.SIGCONT)
        self._paused = False

    def stop(self, grace: float = 10) -> None:
        """SIGTERM, then SIGKILL after `grace` seconds. Always safe (not started, already dead,
        paused: a stopped process would not act on SIGTERM until continued): for fixture teardown."""
        if not self.running:
            return
        if self._paused:
            self.resume()
        self._proc.terminate()
        try:
            self._proc.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.wait(timeout=30)

    def write_kubeconfig(self, path: str | os.PathLike, server: str | None = None) -> Path:
        """The local cluster's admin kubeconfig, pointing at this server (or at `server`, such as a
        relay in front of it: the certificate names 127.0.0.1, so any local port verifies)."""
        return write_kubeconfig(self.cluster.kubeconfig, path, server or self.url)

    def __enter__(self) -> ApiServer:
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


# --- A TCP relay ------------------------------------------------------------------------------

_RST = struct.pack("ii", 1, 0)  # SO_LINGER on, 0 s: close() sends RST instead of FIN


class _Connection:
    def __init__(self, client: socket.socket):
        self.client = client
        self.upstream: socket.socket | None = None
        self.task: asyncio.Task | None = None
        self.abort = False  # close with RST rather than FIN
        self.silenced = False  # blackhole(): forwards nothing more, closes nothing


class Relay:
    """A TCP relay on 127.0.0.1 (a free port) to `host:port`, the faults a network brings.

    It forwards bytes without looking at them, so TLS runs end to end between client and server
    and any kubeconfig keeps working once its server points here (`write_kubeconfig`). It runs in
    a thread of its own with its own asyncio loop; every control is thread-safe and has taken
    effect when it returns.
    """

    def __init__(self, host: str, port: int):
        self.target = (host, port)
        self._listener = socket.socket()
        self._listener.bind(("127.0.0.1", 0))
        self._listener.listen(128)
        self._listener.setblocking(False)
        self.port: int = self._listener.getsockname()[1]
        self.accepted = 0
        self._connections: set[_Connection] = set()
        self._flowing = asyncio.Event()
        self._flowing.set()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name=f"relay-{self.port}", daemon=True)
        self._closed = False
        self._thread.start()
        self._acceptor = self._call(self._start_accepting())

    @classmethod
    def for_kubeconfig(cls, kubeconfig: str | os.PathLike) -> Relay:
        """A relay to the API server of the kubeconfig's current context."""
        url = urllib.parse.urlsplit(kubeconfig_server(kubeconfig))
        return cls(url.hostname, url.port or (443 if url.scheme == "https" else 80))

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    @property
    def connections(self) -> int:
        """Connections open now (a frozen relay keeps counting the ones clients gave up on: it
        notices nothing until it forwards again, as a silent network would)."""
        return len(self._connections)

    def write_kubeconfig(self, source: str | os.PathLike, dest: str | os.PathLike) -> Path:
        """A copy of kubeconfig `source` that reaches its API server through this relay. When the
        source names its server by host name, that name stays the one its certificate is checked
        against (tls-server-name); an IP address such as 127.0.0.1 needs nothing."""
        server = urllib.parse.urlsplit(kubeconfig_server(source))
        try:
            ipaddress.ip_address(server.hostname)
            name = None
        except ValueError:
            name = server.hostname
        # Only the address changes: a path (an API server behind a proxy's prefix) stays.
        relayed = server._replace(netloc=f"127.0.0.1:{self.port}").geturl()
        return write_kubeconfig(source, dest, relayed, tls_server_name=name)

    def drop(self) -> None:
        """Resets every open connection (RST on both sides, as a crashed middlebox or a lost NAT
        entry shows itself); new connections are forwarded as before."""
        self._call(self._drop())

    def freeze(self) -> None:
        """Stops forwarding, in both directions, on open and new connections, closing nothing: a
        half-open link where clients' writes fill buffers and their reads wait, with no error.

        Held bytes are delivered, in order, by thaw(), not discarded: a network that heals before
        TCP gives up loses nothing either (it retransmits), and losing bytes from the middle of a
        TLS stream would make both ends fail on a corrupt record, a fault networks do not cause.
        So a request a client gave up on while frozen still reaches the server after thaw(), as a
        late retransmission would. Bytes handed to the kernel before freeze() returned may still
        arrive."""
        self._call(self._set_flowing(False))

    def thaw(self) -> None:
        """Forwards again, first what was held while frozen."""
        self._call(self._set_flowing(True))

    def blackhole(self) -> None:
        """The connections open now go half-open for good: nothing more is forwarded on them in
        either direction and nothing is closed, so their clients see neither data nor an error (a
        middlebox that lost its state silently, a peer gone without a FIN). New connections are
        forwarded as usual: only a client that gives up on a silent connection gets through."""
        self._call(self._silence())

    async def _silence(self) -> None:
        for conn in self._connections:
            conn.silenced = True

    def close(self) -> None:
        """Stops accepting, resets the open connections and ends the thread. Safe to call twice."""
        if self._closed:
            return
        self._closed = True
        self._call(self._shutdown())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)
        self._loop.close()
        self._listener.close()

    def __enter__(self) -> Relay:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # Everything below runs in the relay's thread.

    def _call(self, coroutine):
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result(timeout=30)

    async def _start_accepting(self) -> asyncio.Task:
        return asyncio.get_running_loop().create_task(self._accept())

    async def _accept(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            client, _ = await loop.sock_accept(self._listener)
            client.setblocking(False)
            conn = _Connection(client)
            self._connections.add(conn)
            self.accepted += 1
            conn.task = loop.create_task(self._serve(conn))

    async def _serve(self, conn: _Connection) -> None:
        loop = asyncio.get_running_loop()
        pumps: list[asyncio.Task] = []
        try:
            family = socket.AF_INET6 if ":" in self.target[0] else socket.AF_INET
            conn.upstream = upstream = socket.socket(family, socket.SOCK_STREAM)
            upstream.setblocking(False)
            try:
                # A name (kind's "localhost", a remote host) resolves in the loop, not blocking it.
                info = await loop.getaddrinfo(*self.target, family=family, type=socket.SOCK_STREAM)
                await loop.sock_connect(upstream, info[0][4])
            except OSError:
                conn.abort = True  # the client sees a reset, as from a server that is not there
                return
            for s in (conn.client, upstream):
                # Without it small writes (HTTP/2 frames, TLS records) wait for delayed ACKs.
                s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            pumps = [
                loop.create_task(self._pump(conn, conn.client, upstream)),
                loop.create_task(self._pump(conn, upstream, conn.client)),
            ]
            try:
                await asyncio.gather(*pumps)
            except OSError:
                conn.abort = True  # one side reset: pass the reset on to the other
        finally:
            for task in pumps:
                task.cancel()
            if pumps:
                await asyncio.wait(pumps)
            for s in (conn.client, conn.upstream):
                if s is None:
                    continue
                if conn.abort:
                    try:
                        s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _RST)
                    except OSError:
                        pass
                s.close()
            self._connections.discard(conn)

    async def _pump(self, conn: _Connection, src: socket.socket, dst: socket.socket) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await self._flowing.wait()
            data = await loop.sock_recv(src, 65536)
            # Frozen while waiting for these bytes: hold them until thawed.
            await self._flowing.wait()
            if conn.silenced:
                await asyncio.Event().wait()  # held for good: until drop() or close()
            if not data:
                # Pass the half-close on: the other direction may still have bytes to carry.
                try:
                    dst.shutdown(socket.SHUT_WR)
                except OSError:
                    pass
                return
            await loop.sock_sendall(dst, data)

    async def _drop(self) -> None:
        tasks = [c.task for c in list(self._connections) if c.task]
        for conn in list(self._connections):
            conn.abort = True
            if conn.task:
                conn.task.cancel()
        if tasks:
            await asyncio.wait(tasks)

    async def _set_flowing(self, flowing: bool) -> None:
        if flowing:
            self._flowing.set()
        else:
            self._flowing.clear()

    async def _shutdown(self) -> None:
        self._acceptor.cancel()
        await asyncio.wait([self._acceptor])
        self._flowing.set()
        await self._drop()


# --- An API server that sheds load -------------------------------------------------------------


class Throttle:
    """An HTTPS proxy on 127.0.0.1 in front of any API server, that answers watches 429 Too Many
    Requests on demand, as an API server's priority and fairness does when it is busy.

    Unlike the Relay it terminates TLS (its own certificate for 127.0.0.1, made with openssl, which
    the kubeconfig it writes trusts) and reads each request: every request is passed on as the
    source kubeconfig's user (its client certificate), with its headers (impersonation included),
    and its answer streamed back (a watch's too); while `throttle_watches()` holds, a request that
    opens a watch is answered 429 instead, with the Status body and Retry-After the API server
    sends. It runs in a thread of its own with its own asyncio loop, as the Relay does.
    """

    HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "content-length", "host", "te", "upgrade"}

    def __init__(self, kubeconfig: str | os.PathLike, folder: Path):
        self.upstream = kubeconfig_server(kubeconfig).rstrip("/")
        self._upstream_tls = _admin_tls(kubeconfig)
        folder.mkdir(parents=True, exist_ok=True)
        self.cert, key = folder / "throttle.crt", folder / "throttle.key"
        subprocess.run(
            ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=127.0.0.1"]
            + ["-addext", "subjectAltName=IP:127.0.0.1", "-keyout", str(key), "-out", str(self.cert)],
            check=True,
            capture_output=True,
        )
        self._tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        self._tls.load_cert_chain(self.cert, key)
        self.port = _free_port()
        self.refused = 0  # watches answered 429
        self.requests = 0  # every request seen
        self._until = 0.0
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name=f"throttle-{self.port}", daemon=True)
        self._thread.start()
        self._runner = self._call(self._start())

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    def write_kubeconfig(self, source: str | os.PathLike, dest: str | os.PathLike) -> Path:
        """A copy of kubeconfig `source` whose API server is this proxy (trusting its certificate)."""
        path = write_kubeconfig(source, dest, self.url)
        config = _load_kubeconfig(path)
        cluster = _current(config, "cluster")
        cluster.pop("certificate-authority", None)
        cluster.pop("tls-server-name", None)
        cluster["certificate-authority-data"] = base64.b64encode(self.cert.read_bytes()).decode()
        path.write_text(yaml.safe_dump(config))
        return path

    def throttle_watches(self, seconds: float) -> None:
        """For the next `seconds`, every request that opens a watch is answered 429."""
        self._until = time.monotonic() + seconds

    def close(self) -> None:
        if self._loop.is_closed():
            return
        self._call(self._stop())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)
        self._loop.close()

    def __enter__(self) -> Throttle:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # Everything below runs in the proxy's thread.

    def _call(self, coroutine):
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result(timeout=30)

    async def _start(self) -> web.AppRunner:
        self._session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(ssl=self._upstream_tls, limit=0),
            timeout=aiohttp.ClientTimeout(total=None, sock_connect=10),
            auto_decompress=False,
        )
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_route("*", "/{path:.*}", self._handle)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", self.port, ssl_context=self._tls).start()
        return runner

    async def _stop(self) -> None:
        await self._runner.cleanup()
        await self._session.close()

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        self.requests += 1
        watch = request.query.get("watch", "").lower() in ("true", "1")
        if watch and time.monotonic() < self._until:
            self.refused += 1
            status = {
                "kind": "Status",
                "apiVersion": "v1",
                "metadata": {},
                "status": "Failure",
                "message": "too many requests, please try again later",
                "reason": "TooManyRequests",
                "details": {"retryAfterSeconds": 1},
                "code": 429,
            }
            return web.json_response(status, status=429, headers={"Retry-After": "1"})
        headers = {k: v for k, v in request.headers.items() if k.lower() not in self.HOP_BY_HOP}
        body = await request.read()
        async with self._session.request(
            request.method, self.upstream + request.path_qs, headers=headers, data=body or None
        ) as upstream:
            response = web.StreamResponse(
                status=upstream.status,
                headers={k: v for k, v in upstream.headers.items() if k.lower() not in self.HOP_BY_HOP},
            )
            await response.prepare(request)
            try:
                async for chunk in upstream.content.iter_any():
                    await response.write(chunk)
                await response.write_eof()
            except (ConnectionResetError, aiohttp.ClientConnectionResetError):
                pass  # the client went (a watch it gave up): so does its upstream request
            return response


# --- The local etcd ---------------------------------------------------------------------------


def _answers_ok(url: str) -> bool:
    """Whether a health endpoint answers 200 within 2 s."""
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return response.status == 200
    except OSError:
        return False


# Whether the running test may share the cluster with other tests (tests/conftest.py sets it for each
# test: False for those marked `alone`). A Component stops a process all tests share, so it refuses
# to act in a test that may run beside others. Outside pytest (the soak) nothing runs beside.
running_beside_others = False


class Component:
    """A process of the local control plane (etcd, KWOK, ...) that a test kills and restarts.

    Restarts reuse the running process's exact command line, environment and working directory, in
    a session of its own and with output appended to its log, as hack/lib/procs.sh starts it, and
    keep its pid file current so `hack/cluster.sh down` still stops it.
    """

    name = ""

    def __init__(self, cluster: LocalCluster):
        if running_beside_others:
            raise RuntimeError(
                f"this test stops the cluster's {self.name}, which every test running beside it needs: "
                "mark it @pytest.mark.alone (make test runs those one at a time)"
            )
        self.cluster = cluster
        self._launch = _Launch.of(cluster.pid(self.name))
        self._proc: subprocess.Popen | None = None

    @property
    def pid(self) -> int | None:
        try:
            return int(self.cluster.pid_file(self.name).read_text().strip())
        except (OSError, ValueError):
            return None

    @property
    def running(self) -> bool:
        pid = self.pid
        return pid is not None and _alive(pid)

    def healthy(self) -> bool:
        raise NotImplementedError

    def kill(self) -> None:
        """SIGKILL; waits until it is gone (its ports and locks released)."""
        pid = self.pid
        if pid is None or not _alive(pid):
            return
        os.kill(pid, signal.SIGKILL)
        if self._proc is not None and self._proc.pid == pid:
            self._proc.wait(timeout=30)  # ours since a restart: reap it
        if not _wait_gone(pid, 30):
            raise RuntimeError(f"{self.name} (pid {pid}) still runs 30 s after SIGKILL")

    def restart(self, timeout: float = 60) -> None:
        """Starts it again as it was started (killed first if it still runs), and waits until it is
        healthy; StartError with the log's last lines otherwise."""
        self.kill()
        log_path = self.cluster.log_file(self.name)
        with open(log_path, "a") as log:
            log.write(f"--- restarted by tests/support/faults.py at {time.strftime('%H:%M:%S')}\n")
            log.flush()
            self._proc = subprocess.Popen(
                self._launch.argv,
                cwd=self._launch.cwd,
                env=self._launch.env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        pid_file = self.cluster.pid_file(self.name)
        # Written whole or not at all: hack/cluster.sh may read it at any time.
        tmp = pid_file.with_suffix(".tmp")
        tmp.write_text(f"{self._proc.pid}\n")
        tmp.replace(pid_file)
        _wait_up(self._proc, self.healthy, timeout, f"{self.name} (restarted)", Path(log_path))


class Kueue(Component):
    """Kueue, run by hack/training.sh as a host process: while it is down, its webhooks, which the
    API server must call for every change of a Kueue Workload, fail those changes."""

    name = "kueue"

    def __init__(self, cluster: LocalCluster):
        super().__init__(cluster)
        config = flag_value(parse_flags(self._launch.argv[1:]), "config")
        if not config:
            raise NotLocalCluster(f"cannot tell the local Kueue's configuration from {self._launch.argv}")
        health = yaml.safe_load(Path(self._launch.cwd, config).read_text()).get("health") or {}
        self.readyz = f"http://{health.get('healthProbeBindAddress', '')}/readyz"

    def healthy(self) -> bool:
        return _answers_ok(self.readyz)


class Kwok(Component):
    """The local control plane's KWOK, which plays the fake nodes' kubelets.

    KWOK (v0.7.0) gives up on a pod's stage whose status patch failed ("failed to apply stage" in
    its log) and never tries it again, so a pod it was completing while etcd was down stays Running
    for good. A kubelet retries its status updates until they land; restarting KWOK after such a
    fault stands in for that: it lists the pods again and plays each one's due stage.
    """

    name = "kwok"
    NODE_ANNOTATION = ("kwok.x-k8s.io/node", "fake")  # hack/cluster.sh's fake nodes

    def __init__(self, cluster: LocalCluster):
        super().__init__(cluster)
        address = flag_value(parse_flags(self._launch.argv[1:]), "server-address")
        if not address:
            raise NotLocalCluster(f"cannot tell the local KWOK's server address from {self._launch.argv}")
        self.healthz = f"http://{address}/healthz"

    def healthy(self) -> bool:
        return _answers_ok(self.healthz)

    def restart(self, timeout: float = 60) -> None:
        """Killed, its node leases deleted, started again. Each KWOK process holds its nodes' leases
        under an identity of its own, and plays a node's pods only while it holds its lease: a new
        process would wait up to the lease's duration (40 s) for the dead one's to expire. A kubelet
        restarted keeps its identity (the node's name) and goes on at once, as KWOK does this way."""
        self.kill()
        self._delete_node_leases()
        super().restart(timeout)

    def _api(self, method: str, path: str) -> dict:
        request = urllib.request.Request(kubeconfig_server(self.cluster.kubeconfig) + path, method=method)
        with urllib.request.urlopen(request, timeout=10, context=_admin_tls(self.cluster.kubeconfig)) as response:
            return json.load(response)

    def _delete_node_leases(self) -> None:
        key, value = self.NODE_ANNOTATION
        nodes = self._api("GET", "/api/v1/nodes")["items"]
        for node in nodes:
            if (node["metadata"].get("annotations") or {}).get(key) != value:
                continue
            try:
                self._api(
                    "DELETE",
                    f"/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases/{node['metadata']['name']}",
                )
            except urllib.error.HTTPError as e:
                if e.code != 404:
                    raise


class Etcd(Component):
    """The local control plane's etcd, for faults in storage: a crash and restart (the main API
    server and anything on it lose storage for that time) and compaction (watches resuming from an
    older resourceVersion get 410 Gone).

    It runs with --unsafe-no-fsync, which a SIGKILL does not make unsafe: the page cache outlives
    the process.
    """

    name = "etcd"

    def __init__(self, cluster: LocalCluster):
        super().__init__(cluster)
        flags = parse_flags(self._launch.argv[1:])
        urls = flag_value(flags, "advertise-client-urls") or flag_value(flags, "listen-client-urls")
        if not urls:
            raise NotLocalCluster(f"cannot tell the local etcd's client URL from {self._launch.argv}")
        self.client_url = urls.split(",")[0].rstrip("/")

    def healthy(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.client_url}/health", timeout=2) as response:
                return json.load(response).get("health") == "true"
        except (OSError, ValueError):
            return False

    def _post(self, path: str, body: dict) -> dict:
        request = urllib.request.Request(
            f"{self.client_url}{path}",
            data=json.dumps(body).encode(),
            headers={"Content-Type": "application/json"},
            method="POST",
        )
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                return json.load(response)
        except urllib.error.HTTPError as e:
            raise EtcdError(e.code, e.read().decode(errors="replace")) from None

    def revision(self) -> int:
        """The store's current revision (what the next write will exceed): the resourceVersion
        space of every object. Read from a range request's header (JSON int64s are strings)."""
        reply = self._post("/v3/kv/range", {"key": base64.b64encode(b"\0").decode(), "count_only": True})
        return int(reply["header"]["revision"])

    def compact(self, revision: int | None = None) -> int:
        """Compacts history up to `revision` (default: the current one), physically, before it
        returns; the revision compacted to. Watches and lists from older resourceVersions that
        reach etcd then fail with 410 Gone. The API server also compacts on its own every 5
        minutes, so compaction is nothing a client may not meet anyway."""
        target = self.revision() if revision is None else revision
        try:
            self._post("/v3/kv/compaction", {"revision": str(target), "physical": True})
        except EtcdError as e:
            # Compacted already (the API server's compactor got there first): what was asked for.
            if revision is None and "compacted" in e.body:
                return target
            raise
        return target


class EtcdError(RuntimeError):
    def __init__(self, status: int, body: str):
        super().__init__(f"etcd answered {status}: {body}")
        self.status = status
        self.body = body
