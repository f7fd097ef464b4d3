"""The search space: canonical values, configuration identity (hpo_operator.core.space)."""

import pytest

from hpo_operator.api.parameters import Parameter, parameters_of
from hpo_operator.api.spec import ParameterAssignment
from hpo_operator.core.space import (
    InvalidConfiguration,
    assignments,
    config_hash,
    format_value,
    normalize,
    normalize_assignment,
    summary,
)


def param(name="p", **kw):
    return Parameter.model_validate({"name": name, **kw})


INT = param("layers", type="int", min=1, max=8)
DOUBLE = param("lr", type="double", min=0.001, max=1.0)
CATEGORICAL = param("opt", type="categorical", values=["adam", "sgd", "0.1"])
DISCRETE = param("batch", type="discrete", values=["16", "32.5", "1e2"])
SPACE = [INT, DOUBLE, CATEGORICAL]


# --- int ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text, canonical",
    [
        ("1", "1"),
        ("8", "8"),
        ("3", "3"),
        ("3.0", "3"),
        ("+3", "3"),
        ("03", "3"),
        ("3e0", "3"),
        (" 4 ", "4"),
    ],
)
def test_int_canonical_form(text, canonical):
    assert normalize(INT, text) == canonical


@pytest.mark.parametrize("text", ["0", "9", "-1", "100", "9.0"])
def test_int_out_of_range(text):
    with pytest.raises(InvalidConfiguration, match="outside"):
        normalize(INT, text)


@pytest.mark.parametrize("text", ["3.5", "1.0001"])
def test_int_must_be_whole(text):
    with pytest.raises(InvalidConfiguration, match="whole number"):
        normalize(INT, text)


@pytest.mark.parametrize("text", ["three", "", "3a", "0x3"])
def test_int_not_a_number(text):
    with pytest.raises(InvalidConfiguration, match="not a number"):
        normalize(INT, text)


@pytest.mark.parametrize("text", ["nan", "inf", "-inf", "1e400"])
def test_int_not_finite(text):
    with pytest.raises(InvalidConfiguration, match="not a finite number"):
        normalize(INT, text)


def test_error_names_the_parameter():
    with pytest.raises(InvalidConfiguration, match=r"^layers: "):
        normalize(INT, "99")


# --- double --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text, canonical",
    [
        ("0.1", "0.1"),
        ("0.10", "0.1"),
        (".1", "0.1"),
        ("1e-1", "0.1"),
        ("1", "1.0"),
        ("0.001", "0.001"),
        ("1.000", "1.0"),
    ],
)
def test_double_canonical_form(text, canonical):
    assert normalize(DOUBLE, text) == canonical


@pytest.mark.parametrize("text", ["0", "0.0009", "1.0000001", "-0.5"])
def test_double_out_of_range(text):
    with pytest.raises(InvalidConfiguration, match="outside"):
        normalize(DOUBLE, text)


@pytest.mark.parametrize("text", ["fast", "0.1.2", ""])
def test_double_not_a_number(text):
    with pytest.raises(InvalidConfiguration, match="not a number"):
        normalize(DOUBLE, text)


def test_double_nan_is_refused():
    with pytest.raises(InvalidConfiguration, match="finite"):
        normalize(DOUBLE, "nan")


def test_double_bounds_are_inclusive():
    assert normalize(DOUBLE, "0.001") == "0.001"
    assert normalize(DOUBLE, "1") == "1.0"


def test_double_negative_zero_is_the_same_configuration_as_zero():
    p = param("shift", type="double", min=-1, max=1)
    assert normalize(p, "-0") == normalize(p, "0")


def test_int_value_off_the_step_grid_is_outside_the_space():
    p = param("units", type="int", min=0, max=10, step=2)
    assert normalize(p, "4") == "4"
    with pytest.raises(InvalidConfiguration):
        normalize(p, "3")


# --- categorical and discrete -----------------------------------------------------------------


def test_categorical_values_are_matched_exactly():
    assert normalize(CATEGORICAL, "adam") == "adam"
    assert normalize(CATEGORICAL, "0.1") == "0.1"
    for text in ["Adam", "adam ", "0.10", ""]:
        with pytest.raises(InvalidConfiguration, match="not one of adam, sgd, 0.1"):
            normalize(CATEGORICAL, text)


@pytest.mark.parametrize(
    "text, canonical",
    [
        ("16", "16"),
        ("16.0", "16"),
        ("1.6e1", "16"),
        ("32.5", "32.5"),
        ("32.50", "32.5"),
        ("100", "1e2"),
    ],
)
def test_discrete_values_match_by_number_and_give_the_listed_text(text, canonical):
    assert normalize(DISCRETE, text) == canonical


def test_discrete_value_not_in_the_list():
    with pytest.raises(InvalidConfiguration, match="not one of 16, 32.5, 1e2"):
        normalize(DISCRETE, "17")


def test_discrete_not_a_number():
    with pytest.raises(InvalidConfiguration, match="not a number"):
        normalize(DISCRETE, "sixteen")


# --- whole configurations ------------------------------------------------------------------


def test_normalize_assignment_gives_canonical_values_in_parameter_order():
    values = {"opt": "sgd", "lr": "0.10", "layers": "2.0"}
    assert list(normalize_assignment(SPACE, values).items()) == [("layers", "2"), ("lr", "0.1"), ("opt", "sgd")]


def test_missing_parameters_are_named():
    with pytest.raises(InvalidConfiguration, match="missing parameters: lr, opt"):
        normalize_assignment(SPACE, {"layers": "2"})


def test_unknown_parameters_are_named():
    with pytest.raises(InvalidConfiguration, match="unknown parameters: a, zz"):
        normalize_assignment(SPACE, {"layers": "2", "lr": "0.1", "opt": "sgd", "zz": "1", "a": "2"})


def test_an_invalid_value_in_a_configuration_is_reported():
    with pytest.raises(InvalidConfiguration, match="lr: .*outside"):
        normalize_assignment(SPACE, {"layers": "2", "lr": "5", "opt": "sgd"})


def test_equal_values_written_differently_are_one_configuration():
    a = normalize_assignment(SPACE, {"layers": "2", "lr": "0.10", "opt": "adam"})
    b = normalize_assignment(SPACE, {"opt": "adam", "lr": "0.1", "layers": "2.0"})
    assert a == b
    assert config_hash(a) == config_hash(b)


def test_config_hash_does_not_depend_on_key_order():
    assert config_hash({"a": "1", "b": "2"}) == config_hash({"b": "2", "a": "1"})


def test_config_hash_tells_configurations_apart():
    base = config_hash({"a": "1", "b": "2"})
    assert config_hash({"a": "1", "b": "3"}) != base
    assert config_hash({"a": "1"}) != base
    assert config_hash({"a": "12", "b": ""}) != config_hash({"a": "1", "b": "2"})
    assert config_hash({"lr": "0.10"}) != config_hash({"lr": "0.1"})  # hashes text: normalise first


def test_config_hash_is_short_stable_hex():
    h = config_hash({"x": "1"})
    assert len(h) == 16 and int(h, 16) >= 0
    assert h == config_hash({"x": "1"})


# --- formatting ----------------------------------------------------------------------------


def test_format_value_per_type():
    assert format_value(INT, 3) == "3"
    assert format_value(INT, 3.0) == "3"
    assert format_value(DOUBLE, 0.1) == "0.1"
    assert format_value(DOUBLE, 1) == "1.0"
    assert format_value(CATEGORICAL, "sgd") == "sgd"


def test_summary_lists_name_value_pairs_in_order():
    assert summary({"layers": "2", "lr": "0.1", "opt": "sgd"}) == "layers=2, lr=0.1, opt=sgd"
    assert summary({}) == ""


def test_assignments():
    assert assignments({"a": "1", "b": "x"}) == [
        ParameterAssignment(name="a", value="1"),
        ParameterAssignment(name="b", value="x"),
    ]


def test_parameters_of_reads_name_value_pairs_by_name_and_skips_nameless_ones():
    items = [{"name": "lr", "value": "0.1"}, {"value": "lost"}, {"name": "layers", "value": "3"}, {"name": "opt"}]
    assert parameters_of(items) == {"lr": "0.1", "layers": "3", "opt": None}
    assert parameters_of(None) == {}
