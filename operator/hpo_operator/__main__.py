"""`python -m hpo_operator` (or `hpo-operator`): run the operator.

Arguments are kopf's `run` options, e.g. `--namespace NS` (repeatable) or `--all-namespaces`,
`--standalone`, `--liveness http://0.0.0.0:8080/healthz`; with no namespace option it watches all
namespaces.
"""

from __future__ import annotations

import sys


def main(argv: list[str] | None = None) -> None:
    from kopf.cli import main as kopf_main

    args = list(sys.argv[1:] if argv is None else argv)
    if not any(a in ("-A", "--all-namespaces") or a.startswith(("-n", "--namespace")) for a in args):
        args.append("--all-namespaces")
    sys.argv = ["kopf", "run", "--module", "hpo_operator.handlers", *args]
    kopf_main()


if __name__ == "__main__":
    main()
