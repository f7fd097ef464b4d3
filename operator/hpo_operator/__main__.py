"""`python -m hpo_operator` (or `hpo-operator`): run the operator.

Arguments are kopf's `run` options, e.g. `--namespace NS` (repeatable) or `--all-namespaces`,
`--standalone`, `--liveness http://0.0.0.0:8080/healthz`; with no namespace option it watches all
namespaces.

With HPO_LEADER_ELECTION_LEASE=<namespace>/<name> (the Helm chart sets it), replicas elect a leader
over that Lease (leader.py): a standby waits, answering only its liveness probe and metrics, and
kopf starts once it leads.
"""

from __future__ import annotations

import logging
import signal
import sys
from urllib.parse import urlsplit


def liveness_port(args: list[str]) -> int | None:
    """The port of kopf's --liveness URL among the arguments, if any."""
    for i, arg in enumerate(args):
        url = None
        if arg.startswith("--liveness="):
            url = arg.split("=", 1)[1]
        elif arg == "--liveness" and i + 1 < len(args):
            url = args[i + 1]
        if url:
            return urlsplit(url).port
    return None


def _exit_on_signal(signum: int, _frame: object) -> None:
    raise SystemExit(128 + signum)


def main(argv: list[str] | None = None) -> None:
    # As a container's PID 1, a process ignores SIGTERM unless it handles it: a standby (or a leader
    # before kopf takes the signal over) would otherwise run on until the kubelet's SIGKILL, and a
    # deleted pod could even become the leader meanwhile. kopf installs its own handler when it starts.
    signal.signal(signal.SIGTERM, _exit_on_signal)
    from kopf.cli import main as kopf_main

    from hpo_operator.controller import leader, telemetry, webhook

    args = list(sys.argv[1:] if argv is None else argv)
    if not any(a in ("-A", "--all-namespaces") or a.startswith(("-n", "--namespace")) for a in args):
        args.append("--all-namespaces")
    # Every replica answers the API server's admission calls, standbys too (webhook.py).
    served = webhook.start()
    election = None
    lease = leader.lease_from_env()
    if lease is not None:
        # kopf sets up logging when it starts; until then, the election's own lines are shown here.
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("[%(asctime)s] %(name)-20.20s [%(levelname)-8.8s] %(message)s"))
        logging.getLogger().addHandler(handler)
        logging.getLogger().setLevel(logging.INFO)
        telemetry.start_server()  # a standby's metrics say it is one (hpo_leader 0)
        election = leader.Election(
            *lease, leader.identity_from_env(), leader.timing_from_env(), on_lost=leader.exit_on_lost
        )
    try:
        if election is not None:
            election.wait(liveness_port(args))
            logging.getLogger().removeHandler(handler)
            telemetry.LEADER.set(1)
        sys.argv = ["kopf", "run", "--module", "hpo_operator.controller.handlers", *args]
        kopf_main()
    finally:
        if election is not None:
            telemetry.LEADER.set(0)
            election.release()
        if served is not None:
            # Leadership is handed over at once; admission calls are answered a while longer, since
            # the API server may route them here until this pod leaves its Service's endpoints.
            webhook.drain()


if __name__ == "__main__":
    main()
