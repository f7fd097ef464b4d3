"""`kubectl hpo dashboard`: serves the web dashboard (hpo_operator.dashboard), which it imports
only when it runs: the server and its plots are far heavier than every other command.

No `from __future__ import annotations` here: typer reads the commands' annotations (see app.py).
"""

from typing import Annotated

import typer

from hpo_operator import client as hpo
from hpo_operator.cli.app import ContextOpt, KubeconfigOpt, NamespaceOpt
from hpo_operator.cli.output import echo, fail, note


def dashboard(
    port: Annotated[int, typer.Option("--port", metavar="PORT", help="Port to serve on (0: any free port).")] = 8080,
    address: Annotated[
        str,
        typer.Option(
            "--address",
            metavar="ADDRESS",
            help="Address to listen on. The default, loopback, lets only this machine in: anyone who reaches the "
            "dashboard reads the cluster with your credentials.",
        ),
    ] = "127.0.0.1",
    all_namespaces: Annotated[
        bool,
        typer.Option(
            "-A",
            "--all-namespaces",
            help="Experiments of every namespace (default: the namespace of -n, else the context's).",
        ),
    ] = False,
    no_browser: Annotated[bool, typer.Option("--no-browser", help="Do not open a browser.")] = False,
    allow_write: Annotated[
        bool,
        typer.Option(
            "--allow-write",
            help="Let the page stop and resume experiments and restart trials (the calls of stop, resume and "
            "restart-trials, with your RBAC). Read-only without it.",
        ),
    ] = False,
    allowed_host: Annotated[
        list[str] | None,
        typer.Option(
            "--allowed-host",
            metavar="HOST",
            help="A Host name the dashboard answers to, besides localhost (repeat for several; '*' for any). Needed "
            "behind a proxy or a name other than the address.",
        ),
    ] = None,
    namespace: NamespaceOpt = None,
    kubeconfig: KubeconfigOpt = None,
    context: ContextOpt = None,
) -> None:
    """Serve a web dashboard: experiments, trials, plots and the recovery of failed trials, live.

    It reads the cluster with your kubeconfig and RBAC, like the other commands, and installs
    nothing in the cluster. Changes show within a second or two, without reloading the page.
    """
    import asyncio
    import threading
    import webbrowser

    from hpo_operator.dashboard import guards, server
    from hpo_operator.dashboard.actions import Actions
    from hpo_operator.dashboard.cluster import ConnectError

    if all_namespaces and namespace:
        raise hpo.InvalidInput("use -n/--namespace or -A/--all-namespaces, not both")
    options = guards.Options(
        address=address,
        port=port,
        allow_write=allow_write,
        context=context,
        allowed_hosts=list(allowed_host) if allowed_host else None,
    )
    if not guards.is_loopback(address):
        note(
            f"warning: listening on {address}: anyone who can reach it reads the cluster with your "
            "credentials" + (", and can stop experiments and restart trials (--allow-write)" if allow_write else "")
        )

    def ready(url: str) -> None:
        where = "all namespaces" if options.namespaces is None else f"namespace {', '.join(options.namespaces)}"
        mode = "read-write" if allow_write else "read-only"
        echo(f"hpo dashboard ({where}, {mode}): {url}  (Ctrl-C to stop)")
        if not no_browser:
            threading.Thread(target=webbrowser.open, args=(url,), daemon=True).start()

    try:
        asyncio.run(
            server.start(
                options,
                kubeconfig,
                namespace,
                all_namespaces,
                actions=Actions(kubeconfig, context) if allow_write else None,
                ready=ready,
            )
        )
    except ConnectError as e:
        fail(str(e))
    except OSError as e:
        fail(f"cannot listen on {address}:{port}: {e.strerror or e}")
    except KeyboardInterrupt:
        pass
    note("dashboard stopped")
