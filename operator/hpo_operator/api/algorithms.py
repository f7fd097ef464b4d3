"""The settings each search algorithm takes, one pydantic model per algorithm.

A field's Python name is the Optuna sampler's keyword argument, its alias the name users write in
spec.algorithm.settings, and its constraints the values the sampler can use. Both checks come from
these models, so they cannot drift apart: the CEL rule of the CRD that refuses unknown setting
names at `kubectl apply` (spec.Algorithm), and the parsing of the values into the sampler's
keyword arguments (samplers.make_sampler), whose errors become the condition InvalidSpec.

Neither Optuna nor kopf is imported here: the API models and the CRD generator use this module.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError
from pydantic.alias_generators import to_camel
from pydantic_core import ErrorDetails, PydanticCustomError

from .vocabulary import AlgorithmName


def _words_to_bool(text: Any) -> Any:
    # pydantic's own bool parsing also takes on/off, t/f, y/n; settings have always taken exactly
    # these words, and an experiment that applied before must mean the same now.
    if isinstance(text, str):
        lowered = text.strip().lower()
        if lowered in ("true", "1", "yes"):
            return True
        if lowered in ("false", "0", "no"):
            return False
    raise PydanticCustomError("bool_word", "input should be true or false (or yes/no, 1/0)")


def _python_number(kind: type) -> BeforeValidator:
    # The text is read as Python reads a number (pydantic alone would take "5.0" as the int 5 and
    # refuse some digits int() takes), so exactly the values taken before are taken; the field's
    # constraints then check the number.
    def read(text: Any) -> Any:
        if not isinstance(text, str):
            return text
        try:
            return kind(text)
        except ValueError:
            raise PydanticCustomError(
                f"{kind.__name__}_text", "input should be a whole number" if kind is int else "input should be a number"
            ) from None

    return BeforeValidator(read)


Flag = Annotated[bool, BeforeValidator(_words_to_bool)]
WholeNumber = Annotated[int, _python_number(int)]
# Optuna takes inf and nan where a positive number is due, then fails at its first model-based ask.
PositiveNumber = Annotated[float, _python_number(float), Field(gt=0, allow_inf_nan=False)]


class AlgorithmSettings(BaseModel):
    """The settings of one algorithm. Every field is optional: what is not set stays Optuna's
    default. Only the aliases are accepted (a user writes nStartupTrials, not n_startup_trials)."""

    model_config = ConfigDict(alias_generator=to_camel, extra="forbid", frozen=True)


class NoSettings(AlgorithmSettings):
    """random and grid: nothing to tune."""


class TpeSettings(AlgorithmSettings):
    n_startup_trials: WholeNumber | None = Field(None, ge=0)
    # Optuna's EI is spelled in capitals; to_camel would write nEiCandidates.
    n_ei_candidates: WholeNumber | None = Field(None, ge=1, alias="nEICandidates")
    multivariate: Flag | None = None
    group: Flag | None = None
    constant_liar: Flag | None = None
    consider_endpoints: Flag | None = None
    prior_weight: PositiveNumber | None = None


class CmaEsSettings(AlgorithmSettings):
    sigma0: PositiveNumber | None = None
    n_startup_trials: WholeNumber | None = Field(None, ge=0)
    # A population of fewer than two cannot be ranked; Optuna fails at its first ask.
    popsize: WholeNumber | None = Field(None, ge=2)
    use_separable_cma: Flag | None = None
    with_margin: Flag | None = None
    lr_adapt: Flag | None = None


class QmcSettings(AlgorithmSettings):
    qmc_type: Literal["sobol", "halton"] | None = None
    scramble: Flag | None = None


# A probability, as Optuna's genetic samplers take them (they refuse values outside [0, 1]).
Probability = Annotated[float, _python_number(float), Field(ge=0, le=1, allow_inf_nan=False)]


class NsgaIISettings(AlgorithmSettings):
    # A generation of fewer than two has no parents to cross; Optuna refuses it.
    population_size: WholeNumber | None = Field(None, ge=2)
    mutation_prob: Probability | None = None
    crossover_prob: Probability | None = None
    swapping_prob: Probability | None = None


class NsgaIIISettings(NsgaIISettings):
    # The number of divisions of each objective's axis for the reference points.
    dividing_parameter: WholeNumber | None = Field(None, ge=1)


# A population: at least two members to rank, at most what one experiment's rounds plan at ease (a
# generation's boundary decides and creates every member's next segment in one round).
MIN_POPULATION = 2
MAX_POPULATION = 1000
MAX_PERTURBATION_FACTORS = 8


def _factors(text: Any) -> Any:
    """perturbationFactors as written: numbers separated by commas ("0.8,1.2")."""
    if not isinstance(text, str):
        return text
    why = "input should be numbers separated by commas, such as 0.8,1.2"
    parts = [p.strip() for p in text.split(",")]
    if not all(parts):
        raise PydanticCustomError("factors_text", why)
    try:
        return tuple(float(p) for p in parts)
    except ValueError:
        raise PydanticCustomError("factors_text", why) from None


Factors = Annotated[
    tuple[Annotated[float, Field(gt=0, allow_inf_nan=False)], ...],
    BeforeValidator(_factors),
    Field(min_length=1, max_length=MAX_PERTURBATION_FACTORS),
]
# The share of the population that exploits (the worst) and is exploited (the best): at most half,
# so that no member is both.
Quantile = Annotated[float, _python_number(float), Field(gt=0, le=0.5, allow_inf_nan=False)]


class PbtSettings(AlgorithmSettings):
    """Population-based training (planner/population.py decides; search/population.py explores).
    Not a sampler's arguments: pbt_settings() gives them with their defaults filled in."""

    # Required (the CRD refuses a pbt experiment without it, and maxTrialCount must be a multiple).
    population_size: WholeNumber = Field(ge=MIN_POPULATION, le=MAX_POPULATION)
    # The steps a segment trains: segment g trains to step (g + 1) x perturbationInterval.
    perturbation_interval: WholeNumber = Field(1, ge=1, le=10**9)
    truncation_quantile: Quantile = 0.25
    resample_probability: Probability = 0.25
    perturbation_factors: Factors = (0.8, 1.2)


class GpSettings(AlgorithmSettings):
    n_startup_trials: WholeNumber | None = Field(None, ge=0)
    # The objective has no noise: the Gaussian process then fits the results exactly.
    deterministic_objective: Flag | None = None


# Keyed by AlgorithmName's words, in its order (the CEL rule and its message list them so; a test
# keeps every algorithm here).
SETTINGS: dict[str, type[AlgorithmSettings]] = {
    AlgorithmName.random.value: NoSettings,
    AlgorithmName.grid.value: NoSettings,
    AlgorithmName.tpe.value: TpeSettings,
    AlgorithmName.cmaes.value: CmaEsSettings,
    AlgorithmName.qmc.value: QmcSettings,
    AlgorithmName.nsga2.value: NsgaIISettings,
    AlgorithmName.nsga3.value: NsgaIIISettings,
    AlgorithmName.pbt.value: PbtSettings,
    AlgorithmName.gp.value: GpSettings,
}


class SettingsError(ValueError):
    """A setting the algorithm does not take, or a value it cannot use; one line, for a condition."""


def setting_names(algorithm: str) -> list[str]:
    """The names users write for the algorithm's settings, in the model's order."""
    return [field.alias or name for name, field in SETTINGS[algorithm].model_fields.items()]


def settings_rule() -> str:
    """The CEL rule (on spec.algorithm) that refuses a setting the algorithm does not take."""
    clauses = [
        f"(self.name == '{algorithm}' && self.settings.all(s, s.name in {names!r}))"
        for algorithm in SETTINGS
        if (names := setting_names(algorithm))
    ]
    return "!has(self.settings) || size(self.settings) == 0 || " + " || ".join(clauses)


def settings_rule_message() -> str:
    return "unknown setting for this algorithm; settings: " + "; ".join(
        f"{algorithm}: {', '.join(names)}" for algorithm in SETTINGS if (names := setting_names(algorithm))
    )


def _setting_name(error: ErrorDetails) -> str:
    # The settings are a flat mapping of names: an error's location starts with the setting's name
    # (pydantic types locations as str | int, the int being for list items).
    return str(error["loc"][0])


def parse_settings(algorithm: str, settings: Mapping[str, str]) -> dict[str, Any]:
    """The sampler's keyword arguments from the settings as written (name -> text). Raises
    SettingsError for the first bad setting in the order given, as the settings were once parsed
    one by one."""
    try:
        parsed = SETTINGS[algorithm].model_validate(dict(settings))
    except ValidationError as e:
        order = list(settings)
        # A setting that is missing sorts first: it is not in the order given.
        first = min(
            e.errors(),
            key=lambda error: order.index(_setting_name(error)) if _setting_name(error) in order else -1,
        )
        name = _setting_name(first)
        if first["type"] == "missing":
            raise SettingsError(f"algorithm {algorithm} needs the setting {name}") from None
        if first["type"] == "extra_forbidden":  # also a field's Python name: users write the alias
            raise SettingsError(
                f"algorithm {algorithm} has no setting {name} "
                f"(it takes {', '.join(setting_names(algorithm)) or 'no settings'})"
            ) from None
        why = first["msg"][:1].lower() + first["msg"][1:]
        raise SettingsError(f"algorithm {algorithm}, setting {name}: {why}, not {settings[name]!r}") from None
    return parsed.model_dump(exclude_unset=True)


def pbt_settings(settings: Mapping[str, str]) -> PbtSettings:
    """A pbt experiment's settings (name -> text as written), with their defaults. Raises
    SettingsError as parse_settings does."""
    parse_settings(AlgorithmName.pbt.value, settings)
    return PbtSettings.model_validate(dict(settings))
