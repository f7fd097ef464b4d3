"""The search algorithms end to end (hpo_operator.search.suggest, driven directly and through the planner).

For every algorithm: its settings reach the Optuna sampler and bad ones are refused readably; a
seed makes the sequence reproducible; a Suggester rebuilt by replay() after a restart continues
with the very suggestions the uninterrupted one makes; and the operator's suggestions at
parallelism 1 are exactly what Optuna used directly (create_study + optimize) produces. Also
warm_start() and should_stop().

Several tests pin bugs found while writing these (now fixed).
"""

from __future__ import annotations

import inspect
import math
import re
import warnings
from datetime import UTC, datetime, timedelta
from pathlib import Path

import optuna
import pytest
import yaml
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution
from optuna.trial import TrialState

from hpo_operator import planner
from hpo_operator.api.algorithms import SETTINGS, Flag, parse_settings, setting_names
from hpo_operator.api.spec import ExperimentSpec
from hpo_operator.api.vocabulary import AlgorithmName
from hpo_operator.core import times
from hpo_operator.core.space import format_value, normalize_assignment
from hpo_operator.search.samplers import SAMPLERS, SearchSpaceError, check, distribution, make_sampler
from hpo_operator.search.suggest import Outcome, Recorded, Suggester
from tests.support.simulate import InMemoryExperiment

# Optuna 5 deprecates some sampler arguments (sigma0, priorWeight, ...) and calls QMCSampler and
# group=True experimental; the warnings say nothing about what is tested here.
pytestmark = [
    pytest.mark.filterwarnings("ignore::FutureWarning"),
    pytest.mark.filterwarnings("ignore::optuna.exceptions.ExperimentalWarning"),
]

# A space with every kind of parameter: log double, stepped double, int, stepped int, categorical,
# discrete.
MIXED = [
    {"name": "lr", "type": "double", "min": 0.0001, "max": 0.1, "log": True},
    {"name": "dropout", "type": "double", "min": 0.0, "max": 0.5, "step": 0.05},
    {"name": "layers", "type": "int", "min": 1, "max": 6},
    {"name": "units", "type": "int", "min": 16, "max": 256, "step": 16},
    {"name": "opt", "type": "categorical", "values": ["adam", "sgd", "rmsprop"]},
    {"name": "batch", "type": "discrete", "values": ["16", "32", "64"]},
]
GRID = [
    {"name": "layers", "type": "int", "min": 1, "max": 3},
    {"name": "dropout", "type": "double", "min": 0.0, "max": 0.5, "step": 0.25},
    {"name": "opt", "type": "categorical", "values": ["adam", "sgd"]},
]
GRID_POINTS = 3 * 3 * 2
# Two continuous parameters (Branin's domain), for the planner-driven runs.
PLANE = [
    {"name": "x", "type": "double", "min": -5.0, "max": 10.0},
    {"name": "y", "type": "double", "min": 0.0, "max": 15.0},
]
# Twelve configurations: samplers repeat themselves here, which the planner skips.
SMALL = [
    {"name": "n", "type": "int", "min": 1, "max": 4},
    {"name": "c", "type": "categorical", "values": ["a", "b", "c"]},
]

T0 = datetime(2024, 5, 1, 10, 0, 0, tzinfo=UTC)
REPO = Path(__file__).resolve().parents[2]


def make_spec(
    algorithm="random",
    seed=42,
    settings=None,
    params=None,
    objective="minimize",
    parallel=1,
    max_trials=100,
    early_stopping=None,
) -> ExperimentSpec:
    algo: dict = {"name": algorithm}
    if seed is not None:
        algo["seed"] = seed
    if settings:
        algo["settings"] = [{"name": k, "value": v} for k, v in settings.items()]
    body = {
        "objective": {"type": objective, "metricName": "loss"},
        "algorithm": algo,
        "parameters": params or (GRID if algorithm == "grid" else MIXED),
        "parallelTrialCount": parallel,
        "maxTrialCount": max_trials,
        "trialTemplate": {
            "primaryContainerName": "train",
            "template": {"spec": {"containers": [{"name": "train", "image": "trainer:1"}]}},
        },
    }
    if early_stopping:
        body["earlyStopping"] = early_stopping
    return ExperimentSpec.model_validate(body)


def loss(values) -> float:
    """A deterministic objective over any of the spaces above; reads text or typed values."""
    v = {k: (x if isinstance(x, str) and not _is_number(x) else float(x)) for k, x in values.items()}
    total = 0.0
    if "lr" in v:
        total += (math.log10(v["lr"]) + 2.5) ** 2
    if "dropout" in v:
        total += (v["dropout"] - 0.2) ** 2
    if "layers" in v:
        total += (v["layers"] - 3) ** 2 / 10
    if "units" in v:
        total += (v["units"] - 128) ** 2 / 1e4
    if "opt" in v:
        total += {"adam": 0.0, "sgd": 0.3, "rmsprop": 0.1}[v["opt"]]
    if "batch" in v:
        total += abs(v["batch"] - 32) / 100
    if "x" in v:
        total += (v["x"] - 1.0) ** 2 + (v["y"] - 3.0) ** 2
    if "n" in v:
        total += (v["n"] - 3) ** 2 + (0.0 if v["c"] == "b" else 0.5)
    return total


def _is_number(text: str) -> bool:
    try:
        float(text)
        return True
    except ValueError:
        return False


def at(seconds: float) -> str:
    return times.iso(T0 + timedelta(seconds=seconds))


# Every algorithm, with the settings variants the brief names. (id, algorithm, settings)
CASES = [
    ("random", "random", {}),
    ("grid", "grid", {}),
    ("tpe", "tpe", {"nStartupTrials": "5"}),
    ("tpe-multivariate", "tpe", {"nStartupTrials": "5", "multivariate": "true"}),
    ("tpe-constant-liar", "tpe", {"nStartupTrials": "5", "constantLiar": "true"}),
    ("tpe-independent", "tpe", {"nStartupTrials": "5", "multivariate": "false", "constantLiar": "false"}),
    ("cmaes", "cmaes", {}),
    ("cmaes-sigma0", "cmaes", {"sigma0": "0.3", "popsize": "4"}),
    ("qmc", "qmc", {}),
    ("qmc-halton", "qmc", {"qmcType": "halton"}),
    ("qmc-sobol-scrambled", "qmc", {"qmcType": "sobol", "scramble": "true"}),
]
CASE_IDS = [c[0] for c in CASES]


def drive(sug: Suggester, n: int, start: int = 0, fail_every: int = 0) -> list[dict[str, str]]:
    """Asks and tells one suggestion at a time (parallelism 1); suggestion i is asked at 10*i s
    and its result decided 5 s later. Every fail_every-th one fails instead."""
    seen = []
    for i in range(start, start + n):
        values = sug.suggest(i)
        if values is None:
            break
        seen.append(values)
        failed = fail_every and i % fail_every == fail_every - 1
        decided = at(10 * i + 5)
        sug.tell(i, Outcome(failed=True, at=decided) if failed else Outcome(value=loss(values), at=decided))
    return seen


# =============================================================================================
# (1) settings reach the sampler; bad ones are refused readably
# =============================================================================================


@pytest.mark.parametrize(
    "algorithm, cls",
    [
        ("random", optuna.samplers.RandomSampler),
        ("grid", optuna.samplers.GridSampler),
        ("tpe", optuna.samplers.TPESampler),
        ("cmaes", optuna.samplers.CmaEsSampler),
        ("qmc", optuna.samplers.QMCSampler),
    ],
)
def test_each_algorithm_gets_its_sampler(algorithm, cls):
    sampler = make_sampler(make_spec(algorithm))
    assert type(sampler) is cls
    assert type(Suggester(make_spec(algorithm)).study.sampler) is cls


@pytest.mark.parametrize(
    "algorithm, settings, attributes",
    [
        ("tpe", {}, {"_n_startup_trials": 10, "_multivariate": None, "_constant_liar": True, "_group": False}),
        ("tpe", {"multivariate": "true"}, {"_multivariate": True}),
        ("tpe", {"multivariate": "false"}, {"_multivariate": False}),
        ("tpe", {"constantLiar": "true"}, {"_constant_liar": True}),
        ("tpe", {"constantLiar": "False"}, {"_constant_liar": False}),
        (
            "tpe",
            {"multivariate": "yes", "constantLiar": "1", "group": "true"},
            {"_multivariate": True, "_constant_liar": True, "_group": True},
        ),
        ("tpe", {"nStartupTrials": "7", "nEICandidates": "12"}, {"_n_startup_trials": 7, "_n_ei_candidates": 12}),
        (
            "tpe",
            {"priorWeight": "2.5", "considerEndpoints": "true"},
            {"_parzen_estimator_parameters.prior_weight": 2.5, "_parzen_estimator_parameters.consider_endpoints": True},
        ),
        ("cmaes", {}, {"_sigma0": None, "_n_startup_trials": 1, "_popsize": None}),
        ("cmaes", {"sigma0": "0.3"}, {"_sigma0": 0.3}),
        ("cmaes", {"sigma0": "2"}, {"_sigma0": 2.0}),
        ("cmaes", {"popsize": "6", "nStartupTrials": "3"}, {"_popsize": 6, "_n_startup_trials": 3}),
        ("cmaes", {"useSeparableCma": "true"}, {"_use_separable_cma": True}),
        ("cmaes", {"withMargin": "true"}, {"_with_margin": True}),
        ("cmaes", {"lrAdapt": "true"}, {"_lr_adapt": True}),
        ("qmc", {}, {"_qmc_type": "sobol", "_scramble": False, "_seed": 42}),
        ("qmc", {"qmcType": "halton"}, {"_qmc_type": "halton"}),
        ("qmc", {"qmcType": "sobol"}, {"_qmc_type": "sobol"}),
        ("qmc", {"scramble": "true"}, {"_scramble": True}),
        ("qmc", {"qmcType": "halton", "scramble": "no"}, {"_qmc_type": "halton", "_scramble": False}),
    ],
)
def test_settings_reach_the_sampler(algorithm, settings, attributes):
    sampler = Suggester(make_spec(algorithm, settings=settings)).study.sampler
    for path, expected in attributes.items():
        value = sampler
        for part in path.split("."):
            value = getattr(value, part)
        assert value == expected and type(value) is type(expected), (path, value)


@pytest.mark.parametrize("algorithm", ["cmaes", "qmc"])
def test_the_fallback_sampler_for_categoricals_is_seeded_too(algorithm):
    first = make_sampler(make_spec(algorithm, seed=5))._independent_sampler
    second = make_sampler(make_spec(algorithm, seed=5))._independent_sampler
    assert isinstance(first, optuna.samplers.RandomSampler)
    assert first._rng.rng.random() == second._rng.rng.random()


def test_grid_sampler_gets_every_value_of_every_parameter():
    sampler = make_sampler(make_spec("grid"))
    assert sampler._search_space == {"dropout": [0.0, 0.25, 0.5], "layers": [1, 2, 3], "opt": ["adam", "sgd"]}
    assert len(sampler._all_grids) == GRID_POINTS


NOT_A_FLAG = "input should be true or false (or yes/no, 1/0)"


@pytest.mark.parametrize(
    "algorithm, name, value, why",
    [
        ("tpe", "multivariate", "maybe", NOT_A_FLAG),
        ("tpe", "constantLiar", "2", NOT_A_FLAG),
        ("tpe", "group", "", NOT_A_FLAG),
        # Words pydantic's own bool parsing takes: settings never did.
        ("tpe", "multivariate", "on", NOT_A_FLAG),
        ("tpe", "constantLiar", "off", NOT_A_FLAG),
        ("tpe", "group", "t", NOT_A_FLAG),
        ("tpe", "considerEndpoints", "y", NOT_A_FLAG),
        ("tpe", "nStartupTrials", "-1", "input should be greater than or equal to 0"),
        ("tpe", "nStartupTrials", "1.5", "input should be a whole number"),
        # pydantic alone reads "5.0" as the int 5: settings never took it.
        ("tpe", "nStartupTrials", "5.0", "input should be a whole number"),
        ("tpe", "nEICandidates", "many", "input should be a whole number"),
        ("tpe", "nEICandidates", "0", "input should be greater than or equal to 1"),
        ("tpe", "priorWeight", "0", "input should be greater than 0"),
        ("tpe", "priorWeight", "nan", "input should be greater than 0"),
        ("tpe", "priorWeight", "inf", "input should be a finite number"),
        ("cmaes", "sigma0", "-1", "input should be greater than 0"),
        ("cmaes", "sigma0", "0", "input should be greater than 0"),
        ("cmaes", "sigma0", "-inf", "input should be greater than 0"),
        ("cmaes", "sigma0", "wide", "input should be a number"),
        ("cmaes", "popsize", "-4", "input should be greater than or equal to 2"),
        ("cmaes", "popsize", "1", "input should be greater than or equal to 2"),
        ("cmaes", "nStartupTrials", "-1", "input should be greater than or equal to 0"),
        ("cmaes", "useSeparableCma", "sure", NOT_A_FLAG),
        ("qmc", "qmcType", "foo", "input should be 'sobol' or 'halton'"),
        ("qmc", "qmcType", "Sobol", "input should be 'sobol' or 'halton'"),
        ("qmc", "qmcType", " sobol", "input should be 'sobol' or 'halton'"),
        ("qmc", "scramble", "maybe", NOT_A_FLAG),
    ],
)
def test_a_bad_setting_value_is_refused_with_a_readable_message(algorithm, name, value, why):
    s = make_spec(algorithm, settings={name: value})
    with pytest.raises(SearchSpaceError) as e:
        check(s)
    # One line, naming the setting as the user wrote it, why, and the value.
    assert str(e.value) == f"algorithm {algorithm}, setting {name}: {why}, not {value!r}"
    with pytest.raises(SearchSpaceError):
        Suggester(s)


@pytest.mark.parametrize(
    "algorithm, name",
    [
        ("tpe", "sigma0"),
        ("tpe", "multiVariate"),
        ("cmaes", "qmcType"),
        ("cmaes", "multivariate"),
        ("qmc", "seed"),
        ("qmc", "nStartupTrials"),
        ("random", "scramble"),
        ("grid", "sigma0"),
        # Optuna's keywords are the models' Python names; users write the aliases.
        ("tpe", "n_startup_trials"),
        ("tpe", "nEiCandidates"),
        ("cmaes", "use_separable_cma"),
        ("qmc", "qmc_type"),
    ],
)
def test_an_unknown_setting_is_refused_naming_the_ones_it_takes(algorithm, name):
    with pytest.raises(SearchSpaceError) as e:
        check(make_spec(algorithm, settings={name: "1"}))
    message = str(e.value)
    assert f"algorithm {algorithm} has no setting {name}" in message
    takes = ", ".join(setting_names(algorithm)) or "no settings"
    assert f"(it takes {takes})" in message


def test_of_several_bad_settings_the_first_written_is_reported():
    for settings, name in [
        ({"priorWeight": "0", "nStartupTrials": "-1"}, "priorWeight"),
        ({"nStartupTrials": "-1", "priorWeight": "0"}, "nStartupTrials"),
    ]:
        with pytest.raises(SearchSpaceError, match=f"^algorithm tpe, setting {name}: "):
            check(make_spec("tpe", settings=settings))
    with pytest.raises(SearchSpaceError, match="^algorithm tpe has no setting popsize "):
        check(make_spec("tpe", settings={"popsize": "4", "priorWeight": "0"}))


@pytest.mark.parametrize(
    "text, value",
    [
        ("true", True),
        ("True", True),
        (" TRUE ", True),
        ("yes", True),
        ("Yes", True),
        ("1", True),
        ("false", False),
        ("FALSE", False),
        (" no", False),
        ("No", False),
        ("0", False),
        ("0 ", False),
    ],
)
def test_a_flag_takes_true_1_yes_and_false_0_no_in_any_case(text, value):
    flags = [
        (algorithm, keyword, field.alias)
        for algorithm, model in SETTINGS.items()
        for keyword, field in model.model_fields.items()
        if field.annotation == Flag | None
    ]
    assert len(flags) == 9  # tpe's 4, cmaes' 3, qmc's scramble, gp's deterministicObjective
    for algorithm, keyword, alias in flags:
        assert parse_settings(algorithm, {alias: text}) == {keyword: value}


@pytest.mark.parametrize(
    "algorithm, settings, options",
    [
        ("random", {}, {}),
        ("grid", {}, {}),
        ("tpe", {"nStartupTrials": "0"}, {"n_startup_trials": 0}),
        ("tpe", {"nStartupTrials": " +7 "}, {"n_startup_trials": 7}),
        ("tpe", {"nStartupTrials": "1_000"}, {"n_startup_trials": 1000}),  # as Python reads numbers
        ("tpe", {"nEICandidates": "1"}, {"n_ei_candidates": 1}),
        ("tpe", {"priorWeight": "1e-3"}, {"prior_weight": 0.001}),
        ("tpe", {"priorWeight": ".5", "multivariate": "true"}, {"prior_weight": 0.5, "multivariate": True}),
        ("cmaes", {"sigma0": "2"}, {"sigma0": 2.0}),
        ("cmaes", {"popsize": "2", "nStartupTrials": "3"}, {"popsize": 2, "n_startup_trials": 3}),
        ("qmc", {"qmcType": "sobol"}, {"qmc_type": "sobol"}),
        ("qmc", {"qmcType": "halton", "scramble": "no"}, {"qmc_type": "halton", "scramble": False}),
    ],
)
def test_good_values_parse_to_optunas_keywords(algorithm, settings, options):
    parsed = parse_settings(algorithm, settings)
    assert parsed == options
    assert {k: type(v) for k, v in parsed.items()} == {k: type(v) for k, v in options.items()}


# Every setting of each algorithm, in values that go together (group needs multivariate; CMA-ES
# takes only one of useSeparableCma, withMargin and lrAdapt), and the keyword arguments they give.
EVERY_SETTING = {
    "tpe": (
        {
            "nStartupTrials": "3",
            "nEICandidates": "8",
            "multivariate": "yes",
            "group": "TRUE",
            "constantLiar": " 1 ",
            "considerEndpoints": "true",
            "priorWeight": "1.5",
        },
        {
            "n_startup_trials": 3,
            "n_ei_candidates": 8,
            "multivariate": True,
            "group": True,
            "constant_liar": True,
            "consider_endpoints": True,
            "prior_weight": 1.5,
        },
    ),
    "cmaes": (
        {
            "sigma0": "0.5",
            "nStartupTrials": "2",
            "popsize": "4",
            "useSeparableCma": "no",
            "withMargin": "0",
            "lrAdapt": "true",
        },
        {
            "sigma0": 0.5,
            "n_startup_trials": 2,
            "popsize": 4,
            "use_separable_cma": False,
            "with_margin": False,
            "lr_adapt": True,
        },
    ),
    "qmc": ({"qmcType": "halton", "scramble": "Yes"}, {"qmc_type": "halton", "scramble": True}),
}


@pytest.mark.parametrize("algorithm", sorted(EVERY_SETTING))
def test_every_setting_at_once_reaches_optunas_sampler(algorithm):
    settings, options = EVERY_SETTING[algorithm]
    assert sorted(settings) == sorted(setting_names(algorithm))
    assert parse_settings(algorithm, settings) == options
    # Optuna's sampler takes every keyword (a misspelt field would be a TypeError here), and works.
    optuna_sampler = SAMPLERS[algorithm](seed=1, **options)
    sug = Suggester(make_spec(algorithm, settings=settings, params=PLANE))
    assert type(sug.study.sampler) is type(optuna_sampler)
    assert len(drive(sug, 8)) == 8


def test_every_algorithm_has_a_settings_model_and_random_and_grid_take_none():
    assert set(SETTINGS) == {a.value for a in AlgorithmName}
    assert setting_names("random") == setting_names("grid") == []
    for algorithm in ("tpe", "cmaes", "qmc"):
        assert setting_names(algorithm)


def _settings_validation() -> dict:
    """The CEL rule of spec.algorithm in the committed CRD (kept equal to the models by test_crds)."""
    crd = yaml.safe_load((REPO / "crds" / "experiments.yaml").read_text())
    spec = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
    [validation] = [
        v for v in spec["properties"]["algorithm"]["x-kubernetes-validations"] if "self.settings" in v["rule"]
    ]
    return validation


def _names_in_rule(rule: str) -> dict[str, list[str]]:
    """The setting names the rule lets each algorithm take."""
    clauses = re.findall(r"\(self\.name == '(\w+)' && self\.settings\.all\(s, s\.name in \[([^\]]*)\]\)\)", rule)
    return {algorithm: re.findall(r"'(\w+)'", names) for algorithm, names in clauses}


def test_the_crd_rule_takes_exactly_each_models_aliases():
    validation = _settings_validation()
    rule = validation["rule"]
    # The aliases as pydantic itself writes each model out (not through setting_names).
    aliases = {
        algorithm: list(model.model_json_schema(by_alias=True).get("properties", {}))
        for algorithm, model in SETTINGS.items()
    }
    in_rule = _names_in_rule(rule)
    assert in_rule == {algorithm: names for algorithm, names in aliases.items() if names}
    # No other way through: nothing but no settings, or one algorithm's clause.
    assert rule == "!has(self.settings) || size(self.settings) == 0 || " + " || ".join(
        f"(self.name == '{a}' && self.settings.all(s, s.name in {names!r}))" for a, names in in_rule.items()
    )
    for algorithm, names in in_rule.items():
        assert f"{algorithm}: {', '.join(names)}" in validation["message"]
    assert validation["message"].startswith("unknown setting for this algorithm; settings: ")
    assert "nEICandidates" in in_rule["tpe"] and "nEiCandidates" not in in_rule["tpe"]
    assert "n_startup_trials" not in in_rule["tpe"] and "nStartupTrials" in in_rule["cmaes"]
    assert in_rule["qmc"] == ["qmcType", "scramble"]
    assert "random" not in in_rule and "grid" not in in_rule


@pytest.mark.parametrize("algorithm", sorted(SAMPLERS))
def test_each_settings_field_is_a_keyword_of_optunas_sampler(algorithm):
    keywords = set(inspect.signature(SAMPLERS[algorithm]).parameters) - {"seed"}
    assert set(SETTINGS[algorithm].model_fields) <= keywords


@pytest.mark.parametrize(
    "algorithm, settings",
    [
        ("tpe", {"group": "true", "multivariate": "false"}),
        ("cmaes", {"useSeparableCma": "true", "withMargin": "true"}),
        ("cmaes", {"withMargin": "true", "lrAdapt": "true"}),
        ("cmaes", {"useSeparableCma": "true", "lrAdapt": "true"}),
    ],
)
def test_a_combination_optuna_refuses_is_a_search_space_error(algorithm, settings):
    with pytest.raises(SearchSpaceError, match=f"algorithm {algorithm}"):
        check(make_spec(algorithm, settings=settings))


# Values Optuna takes when the sampler is made but crashes on at its first model-based ask
# (nStartupTrials 1 makes that the second): in a reconcile, long after the experiment was applied.
# (algorithm, settings with the unusable one first, the same as Optuna's keyword arguments)
UNUSABLE = [
    ("tpe", {"nEICandidates": "0", "nStartupTrials": "1"}, {"n_ei_candidates": 0, "n_startup_trials": 1}),
    ("tpe", {"priorWeight": "inf", "nStartupTrials": "1"}, {"prior_weight": math.inf, "n_startup_trials": 1}),
    ("cmaes", {"popsize": "0"}, {"popsize": 0}),
    ("cmaes", {"popsize": "1"}, {"popsize": 1}),
    ("cmaes", {"sigma0": "inf"}, {"sigma0": math.inf}),
]


@pytest.mark.parametrize("algorithm, settings, options", UNUSABLE)
def test_a_value_the_sampler_cannot_use_is_refused_up_front(algorithm, settings, options):
    # Refused by check(), for this setting: not accepted, and not refused for another reason.
    name = next(iter(settings))
    with pytest.raises(SearchSpaceError, match=f"^algorithm {algorithm}, setting {name}: "):
        check(make_spec(algorithm, settings=settings, params=PLANE))


@pytest.mark.parametrize("algorithm, settings, options", UNUSABLE)
@pytest.mark.filterwarnings("ignore::RuntimeWarning")  # numpy's, on the way to the crash
def test_optuna_itself_crashes_on_the_values_refused_up_front(algorithm, settings, options):
    # Why they are refused. Should a later Optuna cope with one, its refusal can go.
    sampler = {"tpe": optuna.samplers.TPESampler, "cmaes": optuna.samplers.CmaEsSampler}[algorithm]
    study = optuna.create_study(sampler=sampler(seed=42, **options))
    space = {p.name: distribution(p) for p in make_spec(algorithm, params=PLANE).parameters}
    with pytest.raises((ValueError, AssertionError)):
        for _ in range(12):
            trial = study.ask(space)
            study.tell(trial, loss(trial.params))


def test_restart_strategy_is_refused_as_a_setting_cmaes_does_not_take():
    # Optuna's CmaEsSampler still accepts restart_strategy, but since 4.4 ignores it with a
    # warning: were it taken, it would silently do nothing.
    with pytest.raises(SearchSpaceError, match=r"^algorithm cmaes has no setting restartStrategy \(it takes "):
        make_sampler(make_spec("cmaes", settings={"restartStrategy": "ipop"}))


# =============================================================================================
# (2) reproducibility
# =============================================================================================


@pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
def test_the_same_seed_gives_the_same_sequence(case):
    _, algorithm, settings = case
    n = GRID_POINTS if algorithm == "grid" else 20
    first = drive(Suggester(make_spec(algorithm, seed=7, settings=settings)), n, fail_every=6)
    second = drive(Suggester(make_spec(algorithm, seed=7, settings=settings)), n, fail_every=6)
    assert len(first) == n
    assert first == second
    assert len({tuple(v.items()) for v in first}) > n // 2
    space = make_spec(algorithm).parameters
    assert all(normalize_assignment(space, v) == v for v in first)  # canonical values in the space


@pytest.mark.parametrize(
    "case",
    [c for c in CASES if c[1] != "qmc" or c[2].get("scramble")],
    ids=[c[0] for c in CASES if c[1] != "qmc" or c[2].get("scramble")],
)
def test_another_seed_gives_another_sequence(case):
    # (Unscrambled Sobol and Halton sequences do not depend on the seed.)
    _, algorithm, settings = case
    n = GRID_POINTS if algorithm == "grid" else 12
    assert drive(Suggester(make_spec(algorithm, seed=7, settings=settings)), n) != drive(
        Suggester(make_spec(algorithm, seed=8, settings=settings)), n
    )


# =============================================================================================
# (3) restart-safe rebuild
# =============================================================================================


@pytest.mark.parametrize("k", [3, 12])
@pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
def test_a_rebuilt_suggester_continues_with_the_same_suggestions(case, k):
    _, algorithm, settings = case
    s = make_spec(algorithm, seed=11, settings=settings)
    uninterrupted = Suggester(s)
    before = drive(uninterrupted, k, fail_every=5)
    outcomes = {i: uninterrupted.study.trials[i] for i in range(k)}
    after = drive(uninterrupted, 6, start=k)

    rebuilt = Suggester(s)
    rebuilt.replay({i: Recorded(values, created=at(10 * i)) for i, values in enumerate(before)}, count=k)
    for i, trial in outcomes.items():  # what the planner tells after a restart: every known result
        if trial.state == TrialState.FAIL:
            rebuilt.tell(i, Outcome(failed=True, at=at(10 * i + 5)))
        else:
            rebuilt.tell(i, Outcome(value=trial.value, at=at(10 * i + 5)))
    assert rebuilt.count == k
    assert [rebuilt.suggest(i) for i in range(k)] == before
    assert drive(rebuilt, 6, start=k) == after
    history = [(t.state, t.value) for t in uninterrupted.study.trials]
    assert [(t.state, t.value) for t in rebuilt.study.trials] == history


def test_a_rebuilt_grid_ends_where_the_uninterrupted_one_ends():
    s = make_spec("grid", seed=3)
    uninterrupted = Suggester(s)
    before = drive(uninterrupted, 7)
    rest = drive(uninterrupted, 20, start=7)
    rebuilt = Suggester(s)
    rebuilt.replay({i: Recorded(v, at(10 * i)) for i, v in enumerate(before)}, count=7)
    for i, v in enumerate(before):
        rebuilt.tell(i, Outcome(value=loss(v), at=at(10 * i + 5)))
    assert drive(rebuilt, 20, start=7) == rest
    assert len(before + rest) == GRID_POINTS and rebuilt.suggest(GRID_POINTS) is None


# =============================================================================================
# (4) the operator's suggestions are Optuna's
# =============================================================================================


def direct_sampler(algorithm: str, seed: int, settings: dict[str, str]) -> optuna.samplers.BaseSampler:
    """The sampler a user of Optuna would write by hand for these settings (not make_sampler)."""
    if algorithm == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    if algorithm == "grid":
        return optuna.samplers.GridSampler(
            {"layers": [1, 2, 3], "dropout": [0.0, 0.25, 0.5], "opt": ["adam", "sgd"]}, seed=seed
        )
    if algorithm == "tpe":
        kw: dict = {"n_startup_trials": int(settings.get("nStartupTrials", 10))}
        if "multivariate" in settings:
            kw["multivariate"] = settings["multivariate"] == "true"
        if "constantLiar" in settings:
            kw["constant_liar"] = settings["constantLiar"] == "true"
        return optuna.samplers.TPESampler(seed=seed, **kw)
    if algorithm == "cmaes":
        kw = {}
        if "sigma0" in settings:
            kw["sigma0"] = float(settings["sigma0"])
        if "popsize" in settings:
            kw["popsize"] = int(settings["popsize"])
        return optuna.samplers.CmaEsSampler(seed=seed, **kw)
    return optuna.samplers.QMCSampler(
        seed=seed, qmc_type=settings.get("qmcType", "sobol"), scramble=settings.get("scramble") == "true"
    )


def suggest_all(trial: optuna.Trial, spec: ExperimentSpec) -> dict:
    """An objective's suggest_* calls, in parameter order, with samplers.distribution()'s ranges."""
    params = {}
    for p in spec.parameters:
        d = distribution(p)
        if isinstance(d, FloatDistribution):
            params[p.name] = trial.suggest_float(p.name, d.low, d.high, step=d.step, log=d.log)
        elif isinstance(d, IntDistribution):
            params[p.name] = trial.suggest_int(p.name, d.low, d.high, step=d.step, log=d.log)
        else:
            assert isinstance(d, CategoricalDistribution)
            params[p.name] = trial.suggest_categorical(p.name, list(d.choices))
    return params


def optuna_directly(spec: ExperimentSpec, settings: dict[str, str], n: int) -> list[dict]:
    direction = "minimize" if spec.objective.type == "minimize" else "maximize"
    study = optuna.create_study(
        direction=direction, sampler=direct_sampler(spec.algorithm.name, spec.algorithm.seed, settings)
    )
    study.optimize(lambda trial: loss(suggest_all(trial, spec)), n_trials=n)
    return [t.params for t in study.trials]


DIRECT = [(case, "minimize") for case in CASES] + [
    (case, "maximize") for case in CASES if case[0] in ("random", "grid", "tpe", "cmaes", "qmc")
]


@pytest.mark.parametrize("case, objective", DIRECT, ids=[f"{c[0]}-{o}" for c, o in DIRECT])
def test_suggestions_at_parallelism_1_are_optuna_used_directly(case, objective):
    _, algorithm, settings = case
    n = GRID_POINTS if algorithm == "grid" else 20
    s = make_spec(algorithm, seed=13, settings=settings, objective=objective)
    sug = Suggester(s)
    texts = drive(sug, n)
    direct = optuna_directly(s, settings, n)
    assert len(direct) == n
    assert [t.params for t in sug.study.trials] == direct  # typed values, exactly
    assert texts == [{p.name: format_value(p, params[p.name]) for p in s.parameters} for params in direct]


# --- through the planner -------------------------------------------------------------------------


def simulated(spec: ExperimentSpec) -> InMemoryExperiment:
    return InMemoryExperiment(spec, loss)


def planner_case(algorithm, settings=None, n=12):
    return make_spec(algorithm, seed=5, settings=settings, params=PLANE, max_trials=n)


@pytest.mark.parametrize("algorithm, settings", [("random", None), ("qmc", None), ("qmc", {"scramble": "true"})])
def test_through_the_planner_samplers_that_ignore_results_are_optuna_used_directly(algorithm, settings):
    s = planner_case(algorithm, settings)
    cluster = simulated(s).run()
    assert cluster.status["phase"] == "Succeeded" and len(cluster.launched) == 12
    direct = optuna_directly(s, settings or {}, 12)
    assert cluster.launched == [{p.name: format_value(p, d[p.name]) for p in s.parameters} for d in direct]


def test_through_the_planner_grid_is_optuna_used_directly():
    s = make_spec("grid", seed=5, max_trials=GRID_POINTS)
    cluster = simulated(s).run()
    direct = optuna_directly(s, {}, GRID_POINTS)
    assert cluster.launched == [{p.name: format_value(p, d[p.name]) for p in s.parameters} for d in direct]


@pytest.mark.parametrize("algorithm, settings", [("tpe", {"nStartupTrials": "3"}), ("cmaes", None)])
def test_through_the_planner_learning_samplers_are_optuna_used_directly(algorithm, settings):
    s = planner_case(algorithm, settings)
    cluster = simulated(s).run()
    direct = optuna_directly(s, settings or {}, 12)
    assert cluster.launched == [{p.name: format_value(p, d[p.name]) for p in s.parameters} for d in direct]


@pytest.mark.parametrize("algorithm, settings", [("random", None), ("tpe", {"nStartupTrials": "3"})])
def test_on_a_discrete_space_the_trials_are_optunas_suggestions_without_its_repeats(algorithm, settings):
    # docs/search-algorithms.md: Optuna's loop spends a trial on a configuration it suggests again; the operator runs
    # nothing twice, tells the sampler the known result instead (so what follows is unchanged), and
    # counts maxTrialCount in configurations.
    s = make_spec(algorithm, seed=5, settings=settings, params=SMALL, max_trials=8)
    cluster = simulated(s).run()
    direct = [
        {p.name: format_value(p, d[p.name]) for p in s.parameters} for d in optuna_directly(s, settings or {}, 40)
    ]
    without_repeats = [c for i, c in enumerate(direct) if c not in direct[:i]]
    assert cluster.launched == without_repeats[:8]
    if algorithm == "random":  # this seed repeats within the first 8
        assert cluster.launched != direct[:8]


@pytest.mark.parametrize("algorithm, settings", [("tpe", {"nStartupTrials": "3"}), ("cmaes", None)])
def test_through_the_planner_a_restart_continues_with_the_same_trials(algorithm, settings):
    s = planner_case(algorithm, settings)
    uninterrupted = simulated(s).run()
    restarted = simulated(s)
    restarted.run(rounds=6)
    restarted.restart()
    restarted.run()
    assert restarted.launched == uninterrupted.launched


@pytest.mark.parametrize("algorithm", ["random", "qmc"])
def test_through_the_planner_a_restart_continues_for_samplers_that_ignore_results(algorithm):
    s = planner_case(algorithm)
    uninterrupted = simulated(s).run()
    restarted = simulated(s)
    restarted.run(rounds=6)
    restarted.restart()
    assert restarted.run().launched == uninterrupted.launched


# --- suggestions that repeat a configuration -------------------------------------------------------


class RepeatingRun:
    """Parallelism 1 as the planner runs it once results are told before a round's asks: each round
    tells the previous trial's result, then asks until a new configuration comes (at most
    MAX_ASKS_PER_ROUND); a repeat is not run, it is told the known result at once (planner.launch).
    Only new configurations become Trials."""

    def __init__(self, sug: Suggester):
        self.sug, self.index, self.rounds, self.repeats = sug, 0, 0, 0
        self.known: dict[tuple, Outcome] = {}
        self.recorded: dict[int, Recorded] = {}
        self.outcomes: dict[int, Outcome] = {}
        self.launched: list[dict] = []
        self.running: tuple[int, dict] | None = None

    def round(self) -> None:
        now = at(10 * self.rounds)
        self.rounds += 1
        if self.running:
            index, values = self.running
            self.outcomes[index] = self.known[tuple(values.items())] = Outcome(value=loss(values), at=now)
            self.sug.tell(index, self.outcomes[index])
        self.running = None
        for _ in range(planner.MAX_ASKS_PER_ROUND):
            index, values = self.index, self.sug.suggest(self.index)
            self.index += 1
            if tuple(values.items()) in self.known:
                self.repeats += 1
                self.sug.tell(index, self.known[tuple(values.items())])
                continue
            self.recorded[index] = Recorded(values, created=now)
            self.launched.append(values)
            self.running = (index, values)
            return

    def restarted(self) -> RepeatingRun:
        """The same run in a new process: replayed from its Trials, told their results."""
        other = RepeatingRun(Suggester(self.sug.spec))
        other.sug.replay(self.recorded, count=self.index)
        for index, outcome in self.outcomes.items():
            other.sug.tell(index, outcome)
        other.index, other.rounds, other.running = self.index, self.rounds, self.running
        other.known, other.recorded = dict(self.known), dict(self.recorded)
        other.outcomes, other.launched = dict(self.outcomes), list(self.launched)
        return other


REPEATING = [("tpe", 2, {"nStartupTrials": "3"}), ("cmaes", 1, {})]


def repeating_run(algorithm, seed, settings) -> RepeatingRun:
    run = RepeatingRun(Suggester(make_spec(algorithm, seed=seed, settings=settings, params=SMALL)))
    for _ in range(6):
        run.round()
    return run


@pytest.mark.parametrize("algorithm, seed, settings", REPEATING)
def test_the_repeating_scenario_repeats_before_the_restart(algorithm, seed, settings):
    assert repeating_run(algorithm, seed, settings).repeats >= 1


@pytest.mark.parametrize("algorithm, seed, settings", REPEATING)
def test_a_restart_after_repeated_suggestions_continues_with_the_same_trials(algorithm, seed, settings):
    uninterrupted = repeating_run(algorithm, seed, settings)
    restarted = uninterrupted.restarted()
    # Two rounds: in this small space CMA-ES asks its 1,000 a round from here on, each ask slower
    # as the study grows (five rounds took two minutes and showed nothing more).
    for _ in range(2):
        uninterrupted.round()
        restarted.round()
    assert restarted.launched == uninterrupted.launched
    assert restarted.index == uninterrupted.index  # as many asks: the same repeats were skipped


# =============================================================================================
# (5) warm start
# =============================================================================================


def test_warm_start_teaches_finished_configurations_as_complete_trials():
    s = make_spec("tpe", seed=3, settings={"nStartupTrials": "2"})
    finished = [
        ({"lr": "0.003", "dropout": "0.2", "layers": "3", "units": "128", "opt": "adam", "batch": "32"}, 0.05),
        ({"lr": "0.05", "dropout": "0.45", "layers": "6", "units": "16", "opt": "sgd", "batch": "64"}, 3.0),
        ({"lr": "0.0001", "dropout": "0.0", "layers": "1", "units": "256", "opt": "rmsprop", "batch": "16"}, 4.5),
    ]
    sug = Suggester(s)
    assert sug.warm_start(finished) == 3
    trials = sug.study.trials
    assert [t.state for t in trials] == [TrialState.COMPLETE] * 3
    assert [t.value for t in trials] == [0.05, 3.0, 4.5]
    assert trials[0].params == {"lr": 0.003, "dropout": 0.2, "layers": 3, "units": 128, "opt": "adam", "batch": "32"}
    # Suggestion indexes are not shifted: suggestion 0 is the first ask, Optuna's trial 3.
    assert sug.count == 0
    first = sug.suggest(0)
    assert sug.count == 1 and sug._asked[0].number == 3 and sug.values(0) == first
    # The sampler learned from them exactly as Optuna does from add_trial().
    study = optuna.create_study(sampler=optuna.samplers.TPESampler(seed=3, n_startup_trials=2))
    kinds = {p.name: p.type for p in s.parameters}
    for values, value in finished:
        params = {
            k: float(v) if kinds[k] == "double" else int(v) if kinds[k] == "int" else v for k, v in values.items()
        }
        study.add_trial(
            optuna.trial.create_trial(
                params=params, distributions={p.name: distribution(p) for p in s.parameters}, value=value
            )
        )
    study.optimize(lambda trial: loss(suggest_all(trial, s)), n_trials=1)
    assert sug._asked[0].params == study.trials[3].params


def test_warm_start_then_replay_keeps_suggestion_indexes():
    # The handler warm-starts a new Suggester, then replays the experiment's own Trials.
    s = make_spec("tpe", seed=4, settings={"nStartupTrials": "2"})
    finished = [
        ({"lr": "0.003", "dropout": "0.2", "layers": "3", "units": "128", "opt": "adam", "batch": "32"}, 0.1),
        ({"lr": "0.05", "dropout": "0.45", "layers": "6", "units": "16", "opt": "sgd", "batch": "64"}, 3.0),
    ]
    uninterrupted = Suggester(s)
    uninterrupted.warm_start(finished)
    before = drive(uninterrupted, 5)
    after = drive(uninterrupted, 3, start=5)
    rebuilt = Suggester(s)
    rebuilt.warm_start(finished)
    rebuilt.replay({i: Recorded(v, at(10 * i)) for i, v in enumerate(before)}, count=5)
    for i, v in enumerate(before):
        rebuilt.tell(i, Outcome(value=loss(v), at=at(10 * i + 5)))
    assert [rebuilt.suggest(i) for i in range(5)] == before
    assert drive(rebuilt, 3, start=5) == after


def test_warm_start_skips_configurations_outside_the_space():
    sug = Suggester(make_spec("random"))
    good = {"lr": "0.01", "dropout": "0.1", "layers": "2", "units": "32", "opt": "sgd", "batch": "16"}
    outside = [
        {**good, "lr": "0.5"},  # above max
        {**good, "dropout": "0.12"},  # off the step
        {**good, "units": "40"},  # off the step
        {**good, "layers": "9"},
        {**good, "opt": "adagrad"},
        {**good, "batch": "128"},
        {**good, "lr": "fast"},
        {**good, "lr": "nan"},
        {k: v for k, v in good.items() if k != "opt"},  # missing a parameter
    ]
    assert sug.warm_start([(v, 1.0) for v in outside] + [(good, 0.5)]) == 1
    assert [t.params["units"] for t in sug.study.trials] == [32]
    assert sug.suggest(0) is not None and sug.count == 1


def test_warm_start_teaches_grid_nothing():
    sug = Suggester(make_spec("grid"))
    assert sug.warm_start([({"layers": "1", "dropout": "0.0", "opt": "adam"}, 1.0)]) == 0
    assert sug.study.trials == []


def test_warm_start_skips_a_fractional_value_of_an_int_parameter():
    sug = Suggester(make_spec("random"))
    values = {"lr": "0.01", "dropout": "0.1", "layers": "2.5", "units": "32", "opt": "sgd", "batch": "16"}
    assert sug.warm_start([(values, 1.0)]) == 0


# =============================================================================================
# (6) early stopping
# =============================================================================================


def median_spec(objective="minimize"):
    return make_spec(
        "random", params=PLANE, objective=objective, early_stopping={"algorithm": "median", "minTrialsRequired": 2}
    )


@pytest.mark.parametrize("objective, sign", [("minimize", 1), ("maximize", -1)])
def test_the_median_rule_stops_a_clearly_worse_trial_and_not_a_good_one(objective, sign):
    sug = Suggester(median_spec(objective))
    assert isinstance(sug.study.pruner, optuna.pruners.MedianPruner)
    curves = {0: [1.0, 0.8, 0.6], 1: [1.2, 0.9, 0.7]}
    for i, curve in curves.items():
        sug.suggest(i)
        # Not stopped while fewer than minTrialsRequired trials have finished.
        assert not sug.should_stop(i, {step: sign * v for step, v in enumerate(curve, 1)})
        sug.tell(i, Outcome(value=sign * curve[-1]))
    sug.suggest(2)
    sug.suggest(3)
    assert not sug.should_stop(3, {1: sign * 0.9, 2: sign * 0.5})  # a good one goes on
    assert sug.should_stop(2, {1: sign * 5.0})  # clearly worse than both at step 1
    assert not sug.should_stop(3, {1: sign * 0.9, 2: sign * 0.5, 3: sign * 0.4})


def test_the_median_rule_waits_for_min_trials_required():
    sug = Suggester(median_spec())
    sug.suggest(0)
    sug.should_stop(0, {1: 1.0, 2: 0.8})
    sug.tell(0, Outcome(value=0.8))
    sug.suggest(1)
    assert not sug.should_stop(1, {1: 50.0, 2: 50.0})  # one finished trial, two required


def test_should_stop_ignores_unknown_and_finished_suggestions():
    sug = Suggester(median_spec())
    assert not sug.should_stop(0, {1: 1.0})  # never asked
    sug.suggest(0)
    assert not sug.should_stop(0, {})
    sug.tell(0, Outcome(value=1.0))
    assert not sug.should_stop(0, {1: 99.0})  # already decided


def test_each_step_reaches_optuna_once_however_often_the_curve_is_handed_over():
    # The planner hands over a running trial's whole curve every round; Optuna warns of (and
    # ignores) a step reported twice.
    sug = Suggester(median_spec())
    sug.suggest(0)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for last in (1, 2, 3):
            sug.should_stop(0, {step: 1.0 / step for step in range(1, last + 1)})
    assert sug.study.trials[0].intermediate_values == {1: 1.0, 2: 0.5, 3: 1 / 3}


def test_the_docs_list_each_algorithms_settings_as_the_models_do():
    """The settings table of docs/search-algorithms.md is written by hand; the models are the source of truth."""
    page = (REPO / "docs" / "search-algorithms.md").read_text()
    rows = dict(re.findall(r"^\| `(\w+)` \| (.+) \|$", page, re.MULTILINE))
    for algorithm in SETTINGS:
        listed = re.findall(r"`(\w+)`", re.sub(r"\([^)]*\)", "", rows.get(algorithm, "")))
        assert listed == setting_names(algorithm), algorithm


def hyperband_spec(**settings):
    return make_spec("random", params=PLANE, max_trials=200, early_stopping={"algorithm": "hyperband", **settings})


def test_hyperband_stops_trials_worse_than_their_brackets_and_never_the_best():
    sug = Suggester(hyperband_spec(minResource=1, maxResource=9, reductionFactor=3))
    assert isinstance(sug.study.pruner, optuna.pruners.HyperbandPruner)
    stopped = []
    # Scales cycle from best to worst, so each bracket meets good and bad curves early on.
    for i in range(30):
        sug.suggest(i)
        scale = 1.0 + (i * 7) % 10
        curve = {s: scale * 0.9**s for s in range(1, 10)}
        seen = {}
        for s, v in curve.items():
            seen[s] = v
            if sug.should_stop(i, seen):
                stopped.append(scale)
                sug.tell(i, Outcome(pruned=True, steps=seen))
                break
        else:
            sug.tell(i, Outcome(value=curve[9], steps=curve))
    assert stopped and 1.0 not in stopped
    assert min(stopped) > 1.0 and sum(s >= 6 for s in stopped) > sum(s < 6 for s in stopped)


def test_hyperband_with_max_resource_left_out_waits_for_a_finished_trial():
    # Optuna's "auto": the maximum step is the last step of the first finished trial, so nothing is
    # stopped before one has finished, however bad; afterwards a bad one is.
    sug = Suggester(hyperband_spec())
    good = {s: 0.1 * 0.9**s for s in range(1, 10)}
    sug.suggest(0)
    sug.suggest(1)
    assert not any(sug.should_stop(1, {s: 1e6 for s in range(1, k + 1)}) for k in range(1, 10))
    sug.tell(1, Outcome(pruned=True))
    for i in (0, *range(2, 12)):
        sug.suggest(i)
        sug.tell(i, Outcome(value=good[9], steps=good))
    sug.suggest(12)
    assert sug.should_stop(12, {s: 1e6 for s in range(1, 10)})


def test_early_stopping_defaults_are_applied_by_the_operator_not_the_schema():
    # The CRD has no defaults for these settings (they would fill in every rule's settings for
    # every rule, and the rules refuse a setting of another rule): the median rule still waits for
    # 3 finished trials by default.
    sug = Suggester(make_spec("random", params=PLANE, early_stopping={"algorithm": "median"}))
    for i in range(3):
        sug.suggest(i)
        sug.tell(i, Outcome(value=0.1, steps={1: 0.1, 2: 0.1}))
        if i < 2:
            sug.suggest(10 + i)
            assert not sug.should_stop(10 + i, {1: 50.0, 2: 50.0})
    sug.suggest(20)
    assert sug.should_stop(20, {1: 50.0, 2: 50.0})
