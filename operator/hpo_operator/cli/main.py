"""`kubectl hpo`: the seed APIs (PAI's ListHpoExperiments, ListRuns, RestartHpoTrials; Polyaxon's
experiment actions) as a kubectl plugin. Installed as the console script `kubectl-hpo`, which
kubectl finds on PATH and runs for `kubectl hpo ...`.

Everything that talks to the cluster lives in hpo_operator.client; cli/ parses options and prints.
This module puts the plugin together: every command under its names, in the order help lists
them. app.py holds the typer application and what every command shares, output.py the printing,
and the commands live by what they act on: experiments.py (reading experiments), changes.py
(changing them), trials.py (an experiment's trials) and dashboard.py.

`kubectl hpo` starts for every kubectl call, so importing it loads typer, cli/ and the client's
errors only: the kubernetes client (longer to import than all the rest), rich, yaml, the client's
other modules and the dashboard are loaded by the commands that use them, as they run.
tests/unit/test_cli_parsing.py holds the plugin to it.
"""

from hpo_operator.cli import changes, convert, dashboard, experiments, trials
from hpo_operator.cli.app import PROG, app, command

command("list", "ls")(experiments.list_experiments)
command("describe", "get")(experiments.describe)
command("create")(changes.create)
command("stop")(changes.stop)
command("resume")(changes.resume)
command("restart")(changes.restart)
command("copy")(changes.copy_experiment)
command("extend")(changes.extend)
command("delete")(changes.delete)
command("bookmark")(changes.bookmark)
command("unbookmark")(changes.unbookmark)
command("watch")(experiments.watch)
command("pareto")(experiments.pareto)
command("trials", "runs")(trials.trials)
command("metrics")(trials.metrics)
command("logs")(trials.logs)
command("restart-trials")(trials.restart_trials)
command("dashboard")(dashboard.dashboard)
command("convert")(convert.convert)


def main() -> None:
    app(prog_name=PROG)


if __name__ == "__main__":
    main()
