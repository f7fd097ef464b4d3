"""The kubectl plugin (`kubectl hpo`): commands over the client library. The user side: imports
api/, core/, kube/, client/ and (for `kubectl hpo dashboard`) dashboard/."""
