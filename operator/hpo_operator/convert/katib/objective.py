"""The objective, and how a trial's metrics are collected: Katib's metric strategies and
collectors, in our terms."""

from __future__ import annotations

from typing import Any

from hpo_operator.api.spec import metrics_format_problem

from .fields import _and, _Document, _known, _list, _number_text, _plain
from .output import KatibConversionError
from .tables import _METRIC_RE, _REFUSED_COLLECTORS


class _Objective(_Document):
    def objective(self, objective: Any) -> dict[str, Any]:
        objective = _known(
            objective,
            "spec.objective",
            ("type", "goal", "objectiveMetricName", "additionalMetricNames", "metricStrategies"),
        )
        kind = objective.get("type")
        if kind not in ("minimize", "maximize"):
            raise KatibConversionError("spec.objective.type", f"{kind!r} is not minimize or maximize")
        metric = objective.get("objectiveMetricName")
        if not isinstance(metric, str) or not metric:
            raise KatibConversionError("spec.objective.objectiveMetricName", "missing")
        if not _METRIC_RE.match(metric):
            raise KatibConversionError(
                "spec.objective.objectiveMetricName",
                f"{metric} is not a metric name we read: a letter or _ first, then letters, digits and _ . / -; "
                "rename the metric the trial reports",
            )
        out: dict[str, Any] = {"type": kind, "metricName": metric}
        if objective.get("goal") is not None:
            out["goal"] = _plain(_number_text(objective["goal"], "spec.objective.goal"))
        additional = [
            str(m) for m in _list(objective.get("additionalMetricNames"), "spec.objective.additionalMetricNames")
        ]
        if metric in additional:
            raise KatibConversionError("spec.objective.additionalMetricNames", f"repeats the objective metric {metric}")
        if len(set(additional)) != len(additional):
            raise KatibConversionError("spec.objective.additionalMetricNames", "repeats a metric")
        if additional:
            out["additionalMetricNames"] = additional
        self.metric_strategies(objective.get("metricStrategies"), kind, [metric, *additional])
        return out

    def metric_strategies(self, items: Any, kind: str, metrics: list[str]) -> None:
        """Katib extracts each metric's value by a strategy (min, max, latest); ours always keeps the
        last value reported. What differs is said in one note."""
        # Katib's defaulting webhook: min when minimising, max when maximising, for every metric.
        default = "min" if kind == "minimize" else "max"
        strategies = {m: (default, True) for m in metrics}
        for i, item in enumerate(_list(items, "spec.objective.metricStrategies")):
            here = f"spec.objective.metricStrategies[{i}]"
            item = _known(item, here, ("name", "value"))
            if item.get("name") not in strategies:
                raise KatibConversionError(
                    f"{here}.name", f"{item.get('name')!r} is neither the objective nor an additional metric"
                )
            if item.get("value") not in ("min", "max", "latest"):
                raise KatibConversionError(f"{here}.value", f"{item.get('value')!r} is not min, max or latest")
            strategies[item["name"]] = (item["value"], False)
        changed = [
            f"the {value} of {name}" + (" (its default)" if implicit else "")
            for name, (value, implicit) in strategies.items()
            if value != "latest"
        ]
        if changed:
            self.note(
                "spec.objective",
                f"metricStrategies: of the values a trial reported, Katib kept {_and(changed)}; its default "
                "is the min when minimising and the max when maximising. Here a trial keeps the last value it "
                "reports of each metric (the last log line naming it, or its termination message), and that "
                "is its objective: report the best value last to keep Katib's result.",
            )

    def metrics_collector(self, collector_spec: Any) -> dict[str, Any]:
        collector_spec = _known(collector_spec, "spec.metricsCollectorSpec", ("source", "collector"))
        collector = _known(
            collector_spec.get("collector"), "spec.metricsCollectorSpec.collector", ("kind", "customCollector")
        )
        kind = collector.get("kind") or "StdOut"
        source = _known(
            collector_spec.get("source"),
            "spec.metricsCollectorSpec.source",
            ("filter", "fileSystemPath", "httpGet"),
        )
        formats = self.metrics_format(source.get("filter"))
        out: dict[str, Any] = {}
        if kind == "StdOut":
            for key in ("fileSystemPath", "httpGet"):
                if source.get(key) is not None:
                    raise KatibConversionError(
                        f"spec.metricsCollectorSpec.source.{key}", "a StdOut collector takes none"
                    )
            # Our default source (Auto) reads stdout unless the termination message holds the
            # objective, which a Katib trial never writes: stdout, as Katib reads it.
        elif kind == "File" and self.termination_log(source.get("fileSystemPath")):
            out["source"] = "TerminationMessage"
        elif kind in _REFUSED_COLLECTORS:
            raise KatibConversionError(
                "spec.metricsCollectorSpec.collector.kind",
                f"{kind} has no equivalent here: {_REFUSED_COLLECTORS[kind]}",
            )
        else:
            raise KatibConversionError(
                "spec.metricsCollectorSpec.collector.kind",
                f"{kind!r} is not a Katib collector (StdOut, File, TensorFlowEvent, PrometheusMetric, Custom, Push)",
            )
        if collector.get("customCollector") is not None and kind != "Custom":
            raise KatibConversionError("spec.metricsCollectorSpec.collector.customCollector", "only for kind Custom")
        if formats:
            out["metricsFormat"] = formats
        return out

    @staticmethod
    def termination_log(path_spec: Any) -> bool:
        path_spec = _known(path_spec, "spec.metricsCollectorSpec.source.fileSystemPath", ("path", "kind", "format"))
        return path_spec.get("path") == "/dev/termination-log" and (path_spec.get("format") or "TEXT") == "TEXT"

    @staticmethod
    def metrics_format(filter_spec: Any) -> list[str]:
        path = "spec.metricsCollectorSpec.source.filter"
        filter_spec = _known(filter_spec, path, ("metricsFormat",))
        formats = []
        for i, pattern in enumerate(_list(filter_spec.get("metricsFormat"), f"{path}.metricsFormat")):
            if not isinstance(pattern, str) or not pattern:
                raise KatibConversionError(f"{path}.metricsFormat[{i}]", "must be a regular expression")
            problem = metrics_format_problem(pattern)
            if problem:
                raise KatibConversionError(f"{path}.metricsFormat[{i}]", f"{pattern!r} {problem}")
            formats.append(pattern)
        return formats
