"""Katib `kubeflow.org/v1beta1` Experiments converted to ours: `kubectl hpo convert`'s work, for
notebooks and scripts too. The conversion itself is hpo_operator.convert.katib (pure); here its
refusals become the client's InvalidInput, and the results can be created with
create_experiments([c.manifest for c in converted])."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import replace
from typing import Any

from hpo_operator.convert.katib import Converted, KatibConversionError, Note, convert, convert_yaml, to_yaml

from .errors import InvalidInput

__all__ = ["Converted", "Note", "convert_katib", "katib_yaml"]


def convert_katib(
    source: str | Iterable[dict[str, Any]],
    *,
    origin: str = "the input",
    namespace: str | None = None,
    gp: bool = True,
) -> list[Converted]:
    """Our Experiments from Katib's, given as YAML text (several documents allowed) or as parsed
    documents. Each result holds the manifest (`.manifest`), the notes where the mapping changes
    meaning (`.notes`) and its YAML with those notes as comments (`.to_yaml()`). Raises
    InvalidInput naming the Katib field that has no equivalent here, and why.

    `namespace` replaces the Katib Experiment's own (Katib's examples all name `kubeflow`, which a
    user moving off Katib rarely keeps); without it, each keeps the namespace it named, if any.
    `gp`: Katib's bayesianoptimization becomes gp (needs the operator's gp image flavour), else tpe."""
    try:
        converted = convert_yaml(source, gp=gp) if isinstance(source, str) else convert(source, gp=gp)
    except KatibConversionError as e:
        raise InvalidInput(f"{origin}: {e}") from None
    if namespace is None:
        return converted
    return [
        replace(c, manifest={**c.manifest, "metadata": {**c.manifest["metadata"], "namespace": namespace}})
        for c in converted
    ]


def katib_yaml(converted: Iterable[Converted]) -> str:
    """The converted Experiments as one YAML stream with the notes as comments, for kubectl apply."""
    return to_yaml(converted)
