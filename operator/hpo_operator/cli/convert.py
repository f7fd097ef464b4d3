"""`kubectl hpo convert`: Katib Experiments as ours, printed for `kubectl apply -f -` or created."""

import sys
from typing import Annotated

import typer

from hpo_operator import client as hpo
from hpo_operator.cli.app import ContextOpt, KubeconfigOpt, read_input
from hpo_operator.cli.output import echo, note


def convert(
    filename: Annotated[
        str,
        typer.Option(
            "-f", "--filename", metavar="FILE", help="A YAML or JSON file of Katib Experiments ('-' reads stdin)."
        ),
    ],
    apply: Annotated[
        bool, typer.Option("--apply", help="Create the converted experiments instead of printing them.")
    ] = False,
    namespace: Annotated[
        str | None,
        typer.Option(
            "-n",
            "--namespace",
            metavar="NAMESPACE",
            help=(
                "Put the experiments in this namespace, in place of the one the Katib manifest names "
                "(without either: the context's namespace, else default)."
            ),
        ),
    ] = None,
    gp: Annotated[
        bool,
        typer.Option(
            "--gp/--no-gp",
            help=(
                "Katib's bayesianoptimization becomes gp, a Gaussian process (needs the operator's gp "
                "image flavour), or with --no-gp tpe."
            ),
        ),
    ] = True,
    kubeconfig: KubeconfigOpt = None,
    context: ContextOpt = None,
) -> None:
    """Convert Katib (kubeflow.org/v1beta1) Experiments to ours and print them as YAML, with a
    `# note:` comment wherever the meaning changes; a field with no equivalent is an error naming
    it. Pipe the output to `kubectl apply -f -`, or pass --apply."""
    text, source = read_input(filename)
    converted = hpo.convert_katib(text, origin=source, namespace=namespace, gp=gp)
    if not apply:
        sys.stdout.write(hpo.katib_yaml(converted))
        return
    for c in converted:
        for n in c.notes:
            note(f"{c.name}: note: {n.path}: {n.text}")
    s = hpo.connect(kubeconfig, context)
    created = hpo.create_experiments(s, [c.manifest for c in converted], namespace, hpo.whoami(s))
    for e in created:
        echo(
            f"experiment.hpo.dev/{e.name} created (converted from Katib)"
            + (f" in namespace {e.namespace}" if namespace is None else "")
        )
