"""The Helm chart's static parts agree with the repository (one source of truth)."""

from __future__ import annotations

import json
import tomllib
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "deploy" / "helm" / "hpo-operator"


def test_chart_crds_are_byte_identical_copies_of_crds():
    top = {p.name: p.read_bytes() for p in (REPO / "crds").glob("*.yaml")}
    chart = {p.name: p.read_bytes() for p in (CHART / "crds").glob("*.yaml")}
    assert top, "crds/ holds no CRDs"
    assert sorted(chart) == sorted(top), "the chart's crds/ lists other files: run `make chart-crds`"
    stale = [name for name in top if chart[name] != top[name]]
    assert not stale, f"deploy/helm/hpo-operator/crds/{stale} differ from crds/: run `make chart-crds`"


def test_chart_app_version_is_the_package_version():
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    assert chart["apiVersion"] == "v2"
    assert chart["appVersion"] == project["version"]


def test_values_schema_describes_every_top_level_value():
    schema = json.loads((CHART / "values.schema.json").read_text())
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    assert schema.get("additionalProperties") is False
    assert set(values) <= set(schema["properties"]), set(values) - set(schema["properties"])
