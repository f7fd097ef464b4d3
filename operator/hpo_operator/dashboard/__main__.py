"""The dashboard as the chart runs it in a pod: `python3 -m hpo_operator.dashboard`.

The operator's image, with the pod's ServiceAccount (read-only RBAC) and no write actions: those
belong to `kubectl hpo dashboard --allow-write`, with the user's own credentials. No typer here:
the image leaves the kubectl plugin's packages out.
"""

from __future__ import annotations

import argparse
import asyncio
import logging

from . import guards, server
from .cluster import ConnectError


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python3 -m hpo_operator.dashboard", description=__doc__.splitlines()[0])
    parser.add_argument("--address", default="0.0.0.0", help="address to listen on (default 0.0.0.0, in a pod)")
    parser.add_argument("--port", type=int, default=8080)
    parser.add_argument(
        "--namespace",
        "-n",
        action="append",
        default=[],
        metavar="NAMESPACE",
        help="a namespace to show (repeat for several)",
    )
    parser.add_argument("--all-namespaces", "-A", action="store_true", help="every namespace")
    parser.add_argument(
        "--allowed-host",
        action="append",
        default=None,
        metavar="HOST",
        help="a Host name requests may use (repeat; '*' for any; default: any)",
    )
    args = parser.parse_args(argv)
    if args.all_namespaces == bool(args.namespace):
        parser.error("give --all-namespaces or at least one --namespace")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    options = guards.Options(
        address=args.address,
        port=args.port,
        namespaces=None if args.all_namespaces else args.namespace,
        allowed_hosts=args.allowed_host or ["*"],
    )
    try:
        asyncio.run(
            server.start(
                options,
                None,
                None,
                args.all_namespaces,
                ready=lambda url: logging.info("serving on %s:%s", args.address, args.port),
            )
        )
    except ConnectError as e:
        parser.exit(1, f"error: {e}\n")
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
