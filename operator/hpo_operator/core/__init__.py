"""Pure rules over the API's shapes: timestamps, conditions, what a pod says, metrics from logs,
a configuration's identity. Imports only api/."""
