"""The API's words and shapes: group and version, labels, phases, the Experiment and Trial models,
algorithm settings, admission rules and the CRDs generated from them. The lowest floor: it imports
no other floor, and neither Optuna nor kopf."""
