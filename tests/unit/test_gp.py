"""Algorithm gp (Optuna's GPSampler): refused with what to install where PyTorch is missing, and
run through the operator's suggestion path where it is there (the gp extra, the image's gp
flavour). The development lock has no PyTorch, so the second half runs only where it is installed."""

from __future__ import annotations

import pytest

from hpo_operator.api.algorithms import SettingsError, parse_settings
from hpo_operator.search import samplers
from hpo_operator.search.samplers import GP_NEEDS, SearchSpaceError, make_sampler, torch_available
from tests.support.rounds import make_spec
from tests.support.simulate import InMemoryExperiment


def gp_spec(**overrides):
    return make_spec(
        algorithm={"name": "gp", "seed": 3, "settings": [{"name": "nStartupTrials", "value": "4"}]},
        parameters=[
            {"name": "x", "type": "double", "min": -5, "max": 5},
            {"name": "c", "type": "categorical", "values": ["a", "b"]},
        ],
        **overrides,
    )


def test_gp_without_pytorch_is_refused_naming_what_to_install(monkeypatch):
    monkeypatch.setattr(samplers, "torch_available", lambda: False)
    with pytest.raises(SearchSpaceError) as refused:
        make_sampler(gp_spec())
    assert str(refused.value) == GP_NEEDS
    assert "image.flavour: gp" in GP_NEEDS and "hpo-operator[gp]" in GP_NEEDS


def test_gp_takes_its_settings_and_refuses_others():
    assert parse_settings("gp", {"nStartupTrials": "5", "deterministicObjective": "true"}) == {
        "n_startup_trials": 5,
        "deterministic_objective": True,
    }
    with pytest.raises(SettingsError, match="algorithm gp has no setting nEICandidates"):
        parse_settings("gp", {"nEICandidates": "5"})


needs_torch = pytest.mark.skipif(not torch_available(), reason="PyTorch is not installed (the gp extra)")


@needs_torch
@pytest.mark.parametrize("parallel", [1, 4])
def test_gp_finds_the_minimum_through_the_operator(parallel):
    spec = gp_spec(maxTrialCount=16, parallelTrialCount=parallel)
    exp = InMemoryExperiment(spec, lambda v: (float(v["x"]) - 1.3) ** 2 + (0 if v["c"] == "a" else 1)).run()
    best = exp.status["currentOptimalTrial"]
    assert exp.status["phase"] == "Succeeded" and best["objectiveValue"] < 0.05


@needs_torch
def test_gp_with_several_objectives_and_constraints_runs():
    spec = make_spec(
        algorithm={"name": "gp", "seed": 1},
        objective={
            "type": None,
            "metricName": None,
            "metrics": [{"metricName": "a", "type": "minimize"}, {"metricName": "b", "type": "minimize"}],
            "constraints": [{"metricName": "m", "max": 3}],
        },
        parameters=[{"name": "x", "type": "double", "min": 0, "max": 5}],
        maxTrialCount=12,
        parallelTrialCount=2,
    )
    exp = InMemoryExperiment(spec, lambda v: {"a": float(v["x"]), "b": 5 - float(v["x"]), "m": float(v["x"])}).run()
    assert exp.status["phase"] == "Succeeded" and exp.status["paretoFrontSize"] >= 1
