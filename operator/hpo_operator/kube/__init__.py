"""Talking to the API server: the async client, list-then-watch informers, kubeconfig. Imports
only api/ (the group and version it serves)."""
