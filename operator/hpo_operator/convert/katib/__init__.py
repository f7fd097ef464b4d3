"""Katib `kubeflow.org/v1beta1` Experiments turned into ours (`kubectl hpo convert`).

Pure: parsed YAML documents in, our Experiment manifests out, each with the notes that say where
a mapping changes meaning (written as `# note:` comments above the field in the YAML form).
Anything without an equivalent here raises KatibConversionError naming the Katib field, with the
reason; nothing is dropped silently. Each result is checked against our models (ExperimentSpec),
so what it prints is what our API accepts.

Katib's behaviour is taken from its v1beta1 API types, its defaulting webhook and its suggestion
services (which setting each algorithm reads), as documented in its repository.

The package: tables.py (Katib's names, defaults and algorithms, and what maps to what), fields.py
(reading a document's fields strictly, and the state one conversion keeps), conversion.py (one
document: metadata, search space, budgets), objective.py (the objective and how metrics are
collected), search.py (the algorithm, pbt and early stopping), template.py (the trial template
rewritten), output.py (the results, their errors and notes, and their YAML form).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import yaml

from .conversion import _Conversion
from .output import Converted, KatibConversionError, Note
from .tables import JOB_API_VERSION, JOB_KIND, KATIB_API_VERSION

__all__ = [
    "JOB_API_VERSION",
    "JOB_KIND",
    "KATIB_API_VERSION",
    "Converted",
    "KatibConversionError",
    "Note",
    "convert",
    "convert_yaml",
    "to_yaml",
]


def convert(documents: Iterable[Any], *, gp: bool = True) -> list[Converted]:
    """Our Experiments from parsed Katib documents (None, an empty document, is skipped; a v1 List
    is read item by item). `gp`: Katib's bayesianoptimization becomes gp (a Gaussian process, as
    Katib's; it needs the operator's gp image flavour), else tpe, with a note either way."""
    items: list[Any] = []
    for doc in documents:
        if isinstance(doc, dict) and doc.get("kind") == "List" and doc.get("apiVersion") == "v1":
            items.extend(doc.get("items") or [])
        elif doc is not None:
            items.append(doc)
    if not items:
        raise KatibConversionError("input", "holds no Katib Experiment")
    results = []
    for index, doc in enumerate(items, start=1):
        name = ((doc.get("metadata") or {}).get("name") if isinstance(doc, dict) else None) or None
        label = f"experiment {name}" if name else f"document {index}"
        try:
            results.append(_Conversion(doc, gp=gp).run())
        except KatibConversionError as e:
            raise KatibConversionError(e.path, e.reason, label) from None
    return results


def convert_yaml(text: str, *, gp: bool = True) -> list[Converted]:
    """convert() over the documents of a YAML (or JSON) text."""
    try:
        documents = list(yaml.safe_load_all(text))
    except yaml.YAMLError as e:
        raise KatibConversionError("input", f"not valid YAML: {e}") from None
    return convert(documents, gp=gp)


def to_yaml(converted: Iterable[Converted]) -> str:
    """The converted Experiments as one YAML stream, ready for `kubectl apply -f -`."""
    return "---\n".join(c.to_yaml() for c in converted)
