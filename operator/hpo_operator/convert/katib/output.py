"""What a conversion gives: the error that names a Katib field, the notes, the converted Experiment,
and its YAML form with the notes as comments above the fields they are about."""

from __future__ import annotations

import copy
import textwrap
from dataclasses import dataclass
from typing import Any

import yaml


class KatibConversionError(ValueError):
    """A Katib field with no equivalent here (or not valid in Katib either): its path and why."""

    def __init__(self, path: str, reason: str, document: str | None = None) -> None:
        self.path, self.reason, self.document = path, reason, document
        super().__init__(f"{document}: {path}: {reason}" if document else f"{path}: {reason}")


@dataclass(frozen=True)
class Note:
    """Where the conversion changes meaning: our field's path and what changed."""

    path: str
    text: str


@dataclass(frozen=True)
class Converted:
    """One converted Experiment: our manifest and the notes on it."""

    source: str  # the Katib Experiment, namespace/name or name
    manifest: dict[str, Any]
    notes: tuple[Note, ...] = ()

    @property
    def name(self) -> str:
        return self.manifest["metadata"]["name"]

    def to_dict(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "manifest": copy.deepcopy(self.manifest),
            "notes": [{"path": n.path, "text": n.text} for n in self.notes],
        }

    def to_yaml(self) -> str:
        return _emit(self)


# --- the YAML form, with the notes as comments ---------------------------------------------------


class _Dumper(yaml.SafeDumper):
    """Block style, no anchors (a shared value is written out again)."""

    def ignore_aliases(self, data: Any) -> bool:
        return True


def _dump(data: Any, indent: int) -> str:
    text = yaml.dump(data, Dumper=_Dumper, sort_keys=False, default_flow_style=False, width=110, allow_unicode=True)
    return textwrap.indent(text, " " * indent)


def _comments(notes: list[Note], indent: int) -> str:
    lines = []
    for n in notes:
        wrapped = textwrap.wrap(f"note: {n.text}", width=100 - indent - 2)
        lines += [f"# {wrapped[0]}", *(f"#   {line}" for line in wrapped[1:])]
    return "".join(" " * indent + line + "\n" for line in lines)


def _emit(converted: Converted) -> str:
    m = converted.manifest
    notes = list(converted.notes)

    def under(prefix: str) -> list[Note]:
        return [n for n in notes if n.path == prefix or n.path.startswith(prefix + ".")]

    spec_keys = {f"spec.{key}" for key in m["spec"]}
    placed = {id(n) for key in spec_keys for n in under(key)}
    top_spec = [n for n in under("spec") if id(n) not in placed]
    parts = [
        f"# Converted from the Katib Experiment {converted.source}.\n",
        _dump({"apiVersion": m["apiVersion"], "kind": m["kind"]}, 0),
        _comments(under("metadata"), 0),
        _dump({"metadata": m["metadata"]}, 0),
        _comments(top_spec, 0),
        "spec:\n",
    ]
    for key, value in m["spec"].items():
        parts.append(_comments(under(f"spec.{key}"), 2))
        parts.append(_dump({key: value}, 2))
    return "".join(parts)
