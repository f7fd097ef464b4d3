"""The dashboard as the chart runs it in a pod: `python3 -m hpo_operator.dashboard`.

The operator's image, with the pod's ServiceAccount (read-only RBAC, plus the reviews that
authentication needs) and no write actions: those belong to `kubectl hpo dashboard --allow-write`,
with the user's own credentials. Who may read what is --auth's (auth.py): by default a user's
token, reviewed by the API server, and a SubjectAccessReview per namespace. No typer here: the
image leaves the kubectl plugin's packages out.
"""

from __future__ import annotations

import argparse
import asyncio
import logging

from . import auth, guards, server
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
    _auth_arguments(parser)
    args = parser.parse_args(argv)
    if args.all_namespaces == bool(args.namespace):
        parser.error("give --all-namespaces or at least one --namespace")
    try:
        auth = _auth_settings(args)
    except ValueError as e:
        parser.error(str(e))
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    options = guards.Options(
        address=args.address,
        port=args.port,
        namespaces=None if args.all_namespaces else args.namespace,
        allowed_hosts=args.allowed_host or ["*"],
        auth=auth,
    )
    try:
        asyncio.run(
            server.start(
                options,
                None,
                None,
                args.all_namespaces,
                ready=lambda url: logging.info("serving on %s:%s (auth %s)", args.address, args.port, auth.mode),
            )
        )
    except ConnectError as e:
        parser.exit(1, f"error: {e}\n")
    except KeyboardInterrupt:
        pass
    return 0


def _auth_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("who may read what")
    group.add_argument(
        "--auth",
        choices=auth.MODES,
        default="token",
        help="token: the user's bearer token or a browser's sign-in, reviewed by the API server (default); "
        "proxy: the user and groups an authenticating proxy names, from --trusted-proxy only; "
        "none: anyone who reaches it reads what the dashboard's ServiceAccount reads (port-forward only)",
    )
    group.add_argument(
        "--trusted-proxy",
        action="append",
        default=[],
        metavar="CIDR",
        help="an address or CIDR the authenticating proxy's requests come from (--auth proxy; repeat)",
    )
    proxy = auth.ProxySettings()
    group.add_argument("--user-header", default=proxy.user_header, help="the header naming the user (--auth proxy)")
    group.add_argument("--group-header", default=proxy.group_header, help="the header naming the groups (--auth proxy)")
    group.add_argument(
        "--group-separator",
        default=proxy.group_separator,
        help="what separates groups in one header line ('' : one group per line; default ',')",
    )
    group.add_argument("--user-prefix", default="", help="put before the user's name (the API server's own prefix)")
    group.add_argument("--group-prefix", default="", help="put before each group's name")
    group.add_argument(
        "--session-seconds",
        type=float,
        default=auth.AuthSettings.session_seconds,
        help="how long a browser's sign-in lasts (--auth token; never past the token's own expiry)",
    )
    group.add_argument(
        "--access-seconds",
        type=float,
        default=auth.AuthSettings.access_seconds,
        help="how long a user's access to a namespace, allowed or not, is reused before it is reviewed again",
    )


def _auth_settings(args: argparse.Namespace) -> auth.AuthSettings:
    trusted = auth.parse_sources(args.trusted_proxy)
    if args.auth == "proxy" and not trusted:
        raise ValueError("--auth proxy needs --trusted-proxy: the addresses the authenticating proxy connects from")
    if args.auth != "proxy" and trusted:
        raise ValueError("--trusted-proxy is for --auth proxy")
    if args.session_seconds <= 0 or not 0 < args.access_seconds <= 300:
        raise ValueError("--session-seconds must be positive, --access-seconds between 0 and 300")
    return auth.AuthSettings(
        mode=args.auth,
        proxy=auth.ProxySettings(
            trusted=trusted,
            user_header=args.user_header,
            group_header=args.group_header,
            group_separator=args.group_separator,
            user_prefix=args.user_prefix,
            group_prefix=args.group_prefix,
        ),
        session_seconds=args.session_seconds,
        access_seconds=args.access_seconds,
    )


if __name__ == "__main__":
    raise SystemExit(main())
