"""Converters from other tools' manifests to ours (pure: documents in, manifests and notes out).

A floor of its own above api/: the kubectl plugin and the Python client both offer a conversion,
and neither needs the cluster for it.
"""
