"""The search: Katib's algorithm and its settings, pbt's population fitted to the budgets, and
early stopping."""

from __future__ import annotations

from typing import Any

from hpo_operator.api.algorithms import MAX_POPULATION, MIN_POPULATION, SettingsError, parse_settings

from .fields import _Document, _known, _number_text, _settings
from .output import KatibConversionError
from .tables import (
    _ALGORITHMS,
    _BAYESIAN_WITHOUT_GP,
    _NOT_CARRIED,
    _NOT_CARRIED_WITHOUT_GP,
    _REFUSED_ALGORITHMS,
    _SAME_AS_GP,
    _SEED_MAX,
)


class _Search(_Document):
    def algorithm(self, algorithm: Any) -> dict[str, Any]:
        algorithm = _known(algorithm, "spec.algorithm", ("algorithmName", "algorithmSettings"))
        katib = algorithm.get("algorithmName")
        path = "spec.algorithm.algorithmName"
        if katib == "pbt":
            return self.pbt_algorithm(algorithm)
        if katib in _REFUSED_ALGORITHMS:
            raise KatibConversionError(path, f"{katib} has no equivalent here: {_REFUSED_ALGORITHMS[katib]}")
        if katib not in _ALGORITHMS:
            known = ", ".join([*_ALGORITHMS, "pbt", *_REFUSED_ALGORITHMS])
            raise KatibConversionError(path, f"{katib!r} is not a Katib algorithm ({known})")
        ours, mapping = _ALGORITHMS[katib]
        not_carried = _NOT_CARRIED.get(katib, {})
        if katib == "bayesianoptimization" and not self.gp:
            (ours, mapping), not_carried = _BAYESIAN_WITHOUT_GP, _NOT_CARRIED_WITHOUT_GP
        out: dict[str, Any] = {"name": ours}
        settings: dict[str, str] = {}
        if katib == "multivariate-tpe":
            settings["multivariate"] = "true"
        if katib == "sobol":
            settings["qmcType"] = "sobol"
        lost = []
        for name, value, here in _settings(algorithm.get("algorithmSettings"), "spec.algorithm.algorithmSettings"):
            if name == "random_state":
                seed = _number_text(value, f"{here}.value")
                if not seed.is_integer() or not 0 <= seed <= _SEED_MAX:
                    raise KatibConversionError(f"{here}.value", f"a seed is a whole number from 0 to {_SEED_MAX}")
                out["seed"] = int(seed)
            elif name in mapping:
                target = mapping[name]
                if target in settings:
                    raise KatibConversionError(f"{here}.name", f"{name} sets {target} a second time")
                try:
                    parse_settings(ours, {target: value})
                except SettingsError as e:
                    raise KatibConversionError(f"{here}.value", f"{value!r}: {e}") from None
                settings[target] = value
            elif name == "restart_strategy" and katib == "cmaes" and value.lower() == "none":
                pass  # Katib's own default: nothing to carry
            elif ours == "gp" and _SAME_AS_GP.get(name) == value.lower():
                pass  # what our gp does too
            elif name in not_carried:
                lost.append(f"{name}={value} has no counterpart ({not_carried[name]})")
            else:
                takes = ", ".join(["random_state", *mapping, *not_carried])
                raise KatibConversionError(f"{here}.name", f"Katib's {katib} takes no setting {name} ({takes})")
        if settings:
            out["settings"] = [{"name": k, "value": v} for k, v in settings.items()]
        if katib == "bayesianoptimization" and ours == "gp":
            self.note(
                "spec.algorithm",
                "Katib's bayesianoptimization (scikit-optimize's Gaussian process) becomes gp, Optuna's "
                "Gaussian-process sampler. It needs the operator's gp image flavour (the chart's "
                "image.flavour: gp), which has PyTorch; an operator without it refuses the experiment "
                "(InvalidSpec, saying so): convert with --no-gp for tpe instead. n_initial_points maps to "
                "nStartupTrials (random trials before the model is used).",
            )
        elif katib == "bayesianoptimization":
            self.note(
                "spec.algorithm",
                "Katib's bayesianoptimization (scikit-optimize's Gaussian process) becomes tpe, Optuna's "
                "Tree-structured Parzen Estimator: also model-based Bayesian optimisation (converted with "
                "--no-gp; gp, a Gaussian process, needs the operator's gp image flavour). "
                "n_initial_points maps to nStartupTrials (random trials before the model is used).",
            )
        if lost:
            self.note("spec.algorithm", f"Katib's {katib} settings not carried over: " + "; ".join(lost) + ".")
        return out

    def pbt_algorithm(self, algorithm: dict[str, Any]) -> dict[str, Any]:
        """Katib's pbt settings (its suggestion service requires the first three); the population,
        the checkpoint and maxTrialCount are fitted together in population(), once the budgets and
        the trial template are known."""
        found: dict[str, tuple[str, str]] = {}
        takes = ("suggestion_trial_dir", "n_population", "truncation_threshold", "resample_probability")
        for name, value, here in _settings(algorithm.get("algorithmSettings"), "spec.algorithm.algorithmSettings"):
            if name not in takes:
                raise KatibConversionError(f"{here}.name", f"Katib's pbt takes no setting {name} ({', '.join(takes)})")
            found[name] = (value, f"{here}.value")
        for name in takes[:3]:
            if name not in found:
                raise KatibConversionError("spec.algorithm.algorithmSettings", f"Katib's pbt needs the setting {name}")
        size_text, where = found["n_population"]
        size = _number_text(size_text, where)
        if not size.is_integer() or not MIN_POPULATION <= size <= MAX_POPULATION:
            raise KatibConversionError(
                where, f"a population is a whole number from {MIN_POPULATION} to {MAX_POPULATION} here, not {size_text}"
            )
        quantile_text, where = found["truncation_threshold"]
        quantile = _number_text(quantile_text, where)
        if not 0 < quantile <= 0.5:
            raise KatibConversionError(
                where,
                f"{quantile_text} has no equivalent here: the worst truncationQuantile of the population copy "
                "the best truncationQuantile, so it is above 0 and at most 0.5 (no member is both)",
            )
        resample = "0"
        if "resample_probability" in found:
            resample, where = found["resample_probability"]
            if not 0 <= _number_text(resample, where) <= 1:
                raise KatibConversionError(where, f"{resample} is not a probability (0 to 1)")
        directory, where = found["suggestion_trial_dir"]
        if not directory.startswith("/"):
            raise KatibConversionError(where, f"{directory!r} is not an absolute path")
        self.pbt = {"population": int(size), "quantile": quantile_text, "resample": resample, "mount": directory}
        self.note(
            "spec.algorithm",
            "Katib's pbt becomes pbt: a segment of each member is a Trial; once a generation has ended, "
            f"the worst {quantile_text} of the members copy the checkpoint and hyperparameters of one of the "
            "best and perturb them. "
            + (
                f"resample_probability {resample}: Katib kept a value it did not resample, here it is perturbed "
                "(times 0.8 or 1.2, perturbationFactors)."
                if "resample_probability" in found
                else "Without resample_probability Katib perturbed every value by 0.8 or 1.2: resampleProbability 0 "
                "does the same here."
            ),
        )
        return {"name": "pbt"}

    def population(self, out: dict[str, Any]) -> None:
        """Fits a converted pbt experiment together: its population within maxTrialCount (which
        counts segments here, populationSize x generations), and a checkpoint claim per segment
        mounted where Katib mounted its trial directory."""
        if self.pbt is None:
            return
        template = out["trialTemplate"]
        if "job" not in template:
            raise KatibConversionError(
                "spec.trialTemplate.trialSpec",
                "pbt runs Job (or pod) trials here: each segment's checkpoint claim is mounted in the trial's own "
                "pod, and a training operator's pods (TFJob, PyTorchJob, TrainJob) are its own",
            )
        if "earlyStopping" in out:
            raise KatibConversionError(
                "spec.earlyStopping", "pbt itself decides at every generation which members go on: no earlyStopping"
            )
        katib_max, size = out["maxTrialCount"], self.pbt["population"]
        if katib_max < MIN_POPULATION:
            raise KatibConversionError(
                "spec.maxTrialCount", f"{katib_max} trials cannot hold a population of at least {MIN_POPULATION}"
            )
        population = min(size, katib_max)
        generations = katib_max // population
        out["maxTrialCount"] = population * generations
        out["parallelTrialCount"] = min(out["parallelTrialCount"], out["maxTrialCount"])
        if population < size:
            self.note(
                "spec.maxTrialCount",
                f"Katib's population of {size} never ran whole within maxTrialCount {katib_max}: here the "
                f"population is {population} members trained for one generation (maxTrialCount counts segments, "
                "populationSize x generations).",
            )
        elif katib_max % population:
            self.note(
                "spec.maxTrialCount",
                f"maxTrialCount counts segments here, populationSize x generations: {katib_max} becomes "
                f"{out['maxTrialCount']} ({generations} generations of {population}); Katib ran "
                f"{katib_max % population} segments of a generation it never finished.",
            )
        out["algorithm"]["settings"] = [
            {"name": "populationSize", "value": str(population)},
            {"name": "truncationQuantile", "value": self.pbt["quantile"]},
            {"name": "resampleProbability", "value": self.pbt["resample"]},
        ]
        mount = self.pbt["mount"].rstrip("/") or "/"
        out["trialTemplate"] = {
            **template,
            "checkpoint": {"volumeClaimTemplate": {"size": "1Gi"}, "mountPath": mount},
        }
        self.note(
            "spec.trialTemplate",
            f"suggestion_trial_dir {self.pbt['mount']}: each segment finds its starting checkpoint at {mount} (a "
            "claim of its own, 1Gi of the cluster's default storage class: set checkpoint.volumeClaimTemplate), "
            "copied from its parent segment's before the program starts; Katib kept them on its suggestion's "
            "volume. A segment of generation 1 or later has HPO_RESUME=1.",
        )

    def early_stopping(self, stopping: Any) -> dict[str, Any] | None:
        if stopping is None:
            return None
        stopping = _known(stopping, "spec.earlyStopping", ("algorithmName", "algorithmSettings"))
        name = stopping.get("algorithmName")
        if name != "medianstop":
            raise KatibConversionError(
                "spec.earlyStopping.algorithmName", f"{name!r} is not Katib's early stopping algorithm (medianstop)"
            )
        # Katib's medianstop defaults: min_trials_required 3, start_step 4.
        values = {"min_trials_required": 3, "start_step": 4}
        for key, value, here in _settings(stopping.get("algorithmSettings"), "spec.earlyStopping.algorithmSettings"):
            if key not in values:
                raise KatibConversionError(
                    f"{here}.name", f"medianstop takes no setting {key} (min_trials_required, start_step)"
                )
            number = _number_text(value, f"{here}.value")
            low = 1
            if not number.is_integer() or number < low:
                raise KatibConversionError(f"{here}.value", f"{key} is a whole number of at least {low}")
            values[key] = int(number)
        self.note(
            "spec.earlyStopping",
            f"Katib's medianstop stopped a trial whose value after start_step ({values['start_step']}) reports "
            "was worse than the median of the succeeded trials' averages over their first start_step reports. "
            "Here Optuna's MedianPruner compares a running trial's best value so far at each step, from step "
            "warmupSteps on, with the median of the other trials' values at that step, once minTrialsRequired "
            "trials finished. Steps are the ones the trial prints (step=N with its metrics, counting from 1): "
            "a trial that prints none is never stopped.",
        )
        return {
            "algorithm": "median",
            "minTrialsRequired": values["min_trials_required"],
            "warmupSteps": values["start_step"],
        }
