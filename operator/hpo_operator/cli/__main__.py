"""`python -m hpo_operator.cli`: the plugin without its console script."""

from hpo_operator.cli.main import main

main()
