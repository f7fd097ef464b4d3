# One piece: a function per plot the page draws (KINDS) and figure(), the dispatch over them.
"""The dashboard's plots: Optuna's own (optuna.visualization) over a study rebuilt from the Trials
(study.py). With several objectives, the single-objective plots show one objective, the one the
page chose (OBJECTIVE_KINDS).

The figures are plotly figures sent to the page as JSON, where plotly.js draws them. Two things
are adjusted for large experiments: traces of more than GL_POINTS points are drawn with WebGL
(scattergl, the same trace drawn on a canvas), and the parallel-coordinates plot is plotly's
Parcoords trace rather than optuna's, which draws one SVG line per trial (10,000 traces take the
browser minutes; Parcoords draws them at once).
"""

from __future__ import annotations

import math
import re
import warnings
from collections.abc import Callable, Sequence
from typing import Any

import optuna
import optuna.visualization as vis
import plotly.graph_objects as go
import plotly.io
from optuna.distributions import CategoricalDistribution
from optuna.importance import PedAnovaImportanceEvaluator
from optuna.trial import TrialState
from plotly.subplots import make_subplots

from hpo_operator.api.parameters import Parameter
from hpo_operator.client.lineage import segments as lineage_segments
from hpo_operator.client.views import trial_summary

from .data import creation_order
from .study import TrialStudy, build_study, parameter_value, parse_spec, plain, step_values

# Past this many points a scatter trace is drawn with WebGL.
GL_POINTS = 2000
# The parallel-coordinates plot draws at most this many trials (see parallel()).
PARALLEL_LINES = 2000
# The metric curves drawn when the page names no trials: the latest trials with a history.
DEFAULT_CURVES = 10
MAX_CURVES = 50

KINDS = ("history", "parallel", "importance", "slice", "curves", "pareto", "schedule")
# The figures that show one objective of several: the page names it (?metric=), else the first.
OBJECTIVE_KINDS = ("history", "parallel", "importance", "slice")


def _empty(title: str, why: str) -> go.Figure:
    return go.Figure(
        layout={
            "title": {"text": title},
            "annotations": [{"text": why, "showarrow": False, "xref": "paper", "yref": "paper", "x": 0.5, "y": 0.5}],
            "xaxis": {"visible": False},
            "yaxis": {"visible": False},
        }
    )


def _feasible(trial: optuna.trial.FrozenTrial) -> bool:
    return all(v <= 0 for v in trial.constraints.values())


def history(ts: TrialStudy, index: int = 0) -> go.Figure:
    """The objective of each succeeded trial, by trial number, with the best so far. With several
    objectives, objective `index`: Optuna draws a chosen objective's values without the best so
    far (it does not know the objective's direction), which the spec does say, so it is added."""
    if not ts.multi:
        return vis.plot_optimization_history(ts.study, target_name=ts.metric)
    name, maximize = ts.objectives[index], ts.maximize(index)
    figure = vis.plot_optimization_history(ts.study, target=lambda t: t.values[index], target_name=name)
    numbers, best, so_far = [], [], None
    for t in ts.trials(TrialState.COMPLETE):
        if _feasible(t):
            v = t.values[index]
            so_far = v if so_far is None else (max(so_far, v) if maximize else min(so_far, v))
        if so_far is not None:
            numbers.append(t.number)
            best.append(so_far)
    if numbers:
        figure.add_trace(go.Scatter(x=numbers, y=best, mode="lines", name="Best Value"))
    figure.update_layout(title={"text": f"Optimization History: {plain(name)} ({ts.directions[index]})"})
    return figure


def importance(ts: TrialStudy, index: int = 0) -> go.Figure:
    """PED-ANOVA importances: Optuna's fANOVA and mean-decrease-impurity evaluators need
    scikit-learn, which the operator's image does not carry; PED-ANOVA needs NumPy alone. With
    several objectives, for objective `index` (PED-ANOVA looks for low values of the target it is
    given: a maximised objective is given negated)."""
    complete = ts.trials(TrialState.COMPLETE)
    varying = [p.name for p in ts.parameters if len({t.params[p.name] for t in complete}) > 1]
    if len(complete) < 2 or not varying:
        return _empty("Hyperparameter Importances", "needs two succeeded trials with different values")
    if not ts.multi:
        return vis.plot_param_importances(
            ts.study, evaluator=PedAnovaImportanceEvaluator(), params=varying, target_name=ts.metric
        )
    sign = -1.0 if ts.maximize(index) else 1.0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # the advice to negate a target to maximise
        return vis.plot_param_importances(
            ts.study,
            evaluator=PedAnovaImportanceEvaluator(),
            params=varying,
            target=lambda t: sign * t.values[index],
            target_name=ts.objectives[index],
        )


def slices(ts: TrialStudy, index: int = 0) -> go.Figure:
    """The objective (with several, objective `index`) against each parameter, one panel each."""
    if not ts.multi:
        return vis.plot_slice(ts.study, target_name=ts.metric)
    return vis.plot_slice(ts.study, target=lambda t: t.values[index], target_name=ts.objectives[index])


# Optuna's Pareto-front traces are told apart by their hover label alone; the legend names them.
_PARETO_TRACES = ("Infeasible Trial", "Feasible Trial", "Best Trial", "Trial")
_NUMBER = re.compile(r'"number": (\d+)')


def _hover(ts: TrialStudy, trial: optuna.trial.FrozenTrial) -> str:
    values = ", ".join(f"{n}={v:.6g}" for n, v in zip(ts.objectives, trial.values, strict=True))
    params = ", ".join(f"{k}={v:.6g}" if isinstance(v, float) else f"{k}={v}" for k, v in trial.params.items())
    return f"<b>{plain(ts.names[trial.number])}</b><br>{plain(values)}<br>{params}"


def pareto(ts: TrialStudy) -> go.Figure:
    """Optuna's Pareto-front plot: every succeeded trial by its objectives' values, the front
    (Optuna's "Best Trial": the feasible trials no other feasible trial beats in every objective)
    in red, the infeasible trials in grey. It draws two or three objectives."""
    title = "Pareto-front Plot"
    if not ts.multi:
        return _empty(title, "one objective: no Pareto front")
    if len(ts.objectives) > 3:
        return _empty(title, f"the plot draws two or three objectives; this experiment has {len(ts.objectives)}")
    if not ts.trials(TrialState.COMPLETE):
        return _empty(title, "no succeeded trial yet")
    figure = vis.plot_pareto_front(ts.study, target_names=[plain(n) for n in ts.objectives])
    trials = ts.trials()
    for trace in figure.data:
        label = next((n for n in _PARETO_TRACES if f"<extra>{n}</extra>" in (trace.hovertemplate or "")), None)
        # Optuna's hover text is each trial as indented JSON (2.7 MB for 10,000 trials): the same
        # facts on three lines, a third of the size, with the Trial's name.
        text = [_hover(ts, trials[int(m.group(1))]) for m in map(_NUMBER.search, trace.text or ()) if m]
        trace.update(name=label, showlegend=True, text=text if len(text) == len(trace.text or ()) else trace.text)
    figure.update_layout(legend={"orientation": "h", "yanchor": "bottom", "y": 1.0, "xanchor": "right", "x": 1.0})
    return figure


def _decades(low: float, high: float) -> list[float]:
    return [float(e) for e in range(math.floor(math.log10(low)), math.ceil(math.log10(high)) + 1)]


def _lines(
    complete: list[optuna.trial.FrozenTrial], maximize: bool, value: Callable[[optuna.trial.FrozenTrial], float]
) -> list[optuna.trial.FrozenTrial]:
    """At most PARALLEL_LINES trials: the best half of them by `value`, and the others spread
    evenly over the rest by rank (so every range of the objective still shows), in trial order."""
    if len(complete) <= PARALLEL_LINES:
        return complete
    ranked = sorted(complete, key=value, reverse=maximize)
    best, rest = ranked[: PARALLEL_LINES // 2], ranked[PARALLEL_LINES // 2 :]
    wanted = PARALLEL_LINES - len(best)
    sample = [rest[i * len(rest) // wanted] for i in range(wanted)]
    return sorted(best + sample, key=lambda t: t.number)


def parallel(ts: TrialStudy, index: int = 0) -> go.Figure:
    """Parallel coordinates over the objective (with several, every objective) and every
    parameter, coloured by the objective (objective `index`) (plotly's Parcoords: one WebGL line
    per succeeded trial, axes that can be brushed). Past PARALLEL_LINES trials, a sample: more
    lines only blacken the plot, and each costs drawing time (seconds for 10,000 where WebGL runs
    without a GPU)."""
    every = ts.trials(TrialState.COMPLETE)
    title = {"text": "Parallel Coordinate Plot"}
    if not every:
        return _empty(title["text"], "no succeeded trial yet")
    maximize = ts.maximize(index)
    complete = _lines(every, maximize, lambda t: ts.value(t, index))
    if len(complete) < len(every):
        title["text"] += (
            f"<br><sup>{len(complete):,} of {len(every):,} succeeded trials: the {PARALLEL_LINES // 2:,} "
            "best, and the others evenly spread over the rest</sup>"
        )
    shown = range(len(ts.objectives)) if ts.multi else range(1)
    columns = {i: [ts.value(t, i) for t in complete] for i in shown}
    values = columns[index]
    dims: list[dict[str, Any]] = [
        {"label": ts.objectives[i] if ts.multi else ts.metric, "values": columns[i]} for i in shown
    ]
    for p in ts.parameters:
        column = [t.params[p.name] for t in complete]
        dist = ts.distributions[p.name]
        if isinstance(dist, CategoricalDistribution):
            position = {c: i for i, c in enumerate(dist.choices)}
            # Parcoords writes tick labels as plain text (no markup read, no entity decoded): the
            # values as they are, not escaped.
            labels = list(p.values or []) if p.type == "categorical" else [str(c) for c in dist.choices]
            dims.append(
                {
                    "label": p.name,
                    "values": [position[v] for v in column],
                    "tickvals": list(range(len(labels))),
                    "ticktext": labels,
                    "range": [0, max(len(labels) - 1, 1)],
                }
            )
        elif p.log:
            ticks = _decades(p.min, p.max)  # type: ignore[arg-type]
            dims.append(
                {
                    "label": f"{p.name} (log)",
                    "values": [math.log10(v) for v in column],
                    "tickvals": ticks,
                    "ticktext": [f"{10**e:g}" for e in ticks],
                    "range": [math.log10(p.min), math.log10(p.max)],
                }
            )  # type: ignore[arg-type]
        else:
            dims.append({"label": p.name, "values": column, "range": [p.min, p.max]})
    line = {
        "color": values,
        "colorscale": "Blues",
        "reversescale": not maximize,  # the best trials darkest
        "showscale": True,
        "colorbar": {"title": {"text": ts.objectives[index] if ts.multi else ts.metric}},
    }
    return go.Figure(
        go.Parcoords(dimensions=dims, line=line, labelangle=0), layout={"title": title, "margin": {"l": 80, "r": 80}}
    )


def curve_trials(trials: Sequence[dict], metric: str, chosen: Sequence[str] = ()) -> list[dict]:
    """The trials whose metric curves are drawn: the chosen ones, else the latest with a history
    of `metric`."""
    if chosen:
        wanted = set(chosen[:MAX_CURVES])
        return [t for t in trials if t["metadata"]["name"] in wanted]
    with_history = [t for t in creation_order(trials) if step_values(t.get("status") or {}, metric)]
    return with_history[-DEFAULT_CURVES:]


def curves(spec: dict, trials: Sequence[dict], metric: str | None = None, chosen: Sequence[str] = ()) -> go.Figure:
    """Per-trial curves of one metric over its steps (metricHistory), several trials overlaid:
    Optuna's intermediate-values plot of a study whose intermediate values are that metric's."""
    metric = metric or parse_spec(spec).objective.names[0]
    picked = curve_trials(trials, metric, chosen)
    ts = build_study(spec, picked, metric=metric, state=TrialState.RUNNING, with_history=True)
    figure = vis.plot_intermediate_values(ts.study)
    for trace in figure.data:  # optuna names them Trial<number>
        number = trace.name.removeprefix("Trial")
        if number.isdigit() and int(number) < len(ts.names):
            trace.name = ts.names[int(number)]
    figure.update_layout(title={"text": f"{metric} by step"}, yaxis={"title": {"text": metric}}, showlegend=True)
    if not figure.data:
        figure.add_annotation(
            text=f"no trial has reported {metric} with a step yet",
            showarrow=False,
            xref="paper",
            yref="paper",
            x=0.5,
            y=0.5,
        )
    return figure


def _segment_hover(node: Any, objective: str) -> str:
    value = "" if node.objective_value is None else f"{objective}={node.objective_value:.6g}"
    origin = f"exploited member {node.parent_member} ({node.parent})" if node.exploited else ""
    status = node.phase if node.failure is None else f"{node.phase} ({node.failure})"
    params = ", ".join(f"{k}={v}" for k, v in node.parameters.items())
    lines = [f"<b>{plain(node.trial)}</b>", f"member {node.member}, generation {node.generation}", status]
    lines += [plain(x) for x in (value, origin, params) if x]
    return "<br>".join(lines)


def schedule(spec: dict, trials: Sequence[dict]) -> go.Figure:
    """Population-based training: each member's hyperparameters over the generations, one panel
    per parameter. A grey line follows each member; each segment is a marker coloured by its
    objective (a cross: it failed); a segment that exploited another member's checkpoint is a star,
    reached by a dashed red line from the parent segment it copied."""
    title = "Hyperparameter schedule"
    parsed = parse_spec(spec)
    if parsed.algorithm.name != "pbt":
        return _empty(title, "for population-based training (algorithm pbt)")
    nodes = lineage_segments(trial_summary(t) for t in trials)
    if not nodes:
        return _empty(title, "no segment yet")
    objective = parsed.objective.names[0]
    maximize = parsed.objective.type == "maximize"
    params = parsed.parameters
    figure = make_subplots(
        rows=len(params),
        cols=1,
        shared_xaxes=True,
        vertical_spacing=min(0.08, 0.3 / max(len(params), 1)),
        subplot_titles=[plain(p.name) for p in params],
    )
    by_key = {(n.generation, n.member): n for n in nodes}
    members = sorted({n.member for n in nodes})
    for row, p in enumerate(params, start=1):

        def y(node: Any, p: Parameter = p) -> Any:
            return parameter_value(p, node.parameters.get(p.name, "nan")) if p.name in node.parameters else None

        # One trace per kind of mark (not per member): a population of hundreds stays a few traces.
        lx: list[Any] = []
        ly: list[Any] = []
        for m in members:
            mine = sorted((n for n in nodes if n.member == m), key=lambda n: n.generation)
            lx += [n.generation for n in mine] + [None]
            ly += [y(n) for n in mine] + [None]
        figure.add_trace(
            go.Scatter(
                x=lx, y=ly, mode="lines", line={"color": "#c8c8c8", "width": 1}, hoverinfo="skip", showlegend=False
            ),
            row=row,
            col=1,
        )
        ex: list[Any] = []
        ey: list[Any] = []
        for n in nodes:
            parent = by_key.get((n.generation - 1, n.parent_member if n.parent_member is not None else -1))
            if n.exploited and parent is not None:
                ex += [parent.generation, n.generation, None]
                ey += [y(parent), y(n), None]
        figure.add_trace(
            go.Scatter(
                x=ex,
                y=ey,
                mode="lines",
                line={"color": "#d62728", "width": 1.5, "dash": "dash"},
                name="exploit",
                legendgroup="exploit",
                showlegend=row == 1,
                hoverinfo="skip",
            ),
            row=row,
            col=1,
        )
        done = [n for n in nodes if n.objective_value is not None]
        failed = [n for n in nodes if n.objective_value is None]
        figure.add_trace(
            go.Scatter(
                x=[n.generation for n in done],
                y=[y(n) for n in done],
                mode="markers",
                marker={
                    "color": [n.objective_value for n in done],
                    "coloraxis": "coloraxis",
                    "symbol": ["star" if n.exploited else "circle" for n in done],
                    "size": [13 if n.exploited else 9 for n in done],
                    "line": {"width": 1, "color": "#333"},
                },
                name="segment",
                showlegend=False,
                text=[_segment_hover(n, objective) for n in done],
                hovertemplate="%{text}<extra></extra>",
            ),
            row=row,
            col=1,
        )
        if failed:
            figure.add_trace(
                go.Scatter(
                    x=[n.generation for n in failed],
                    y=[y(n) for n in failed],
                    mode="markers",
                    marker={"color": "#888", "symbol": "x", "size": 9},
                    name="failed",
                    legendgroup="failed",
                    showlegend=row == 1,
                    text=[_segment_hover(n, objective) for n in failed],
                    hovertemplate="%{text}<extra></extra>",
                ),
                row=row,
                col=1,
            )
        if p.log:
            figure.update_yaxes(type="log", row=row, col=1)
        elif p.type in ("categorical", "discrete"):
            figure.update_yaxes(type="category", categoryarray=[plain(v) for v in p.values or []], row=row, col=1)
    figure.update_xaxes(title={"text": "generation"}, dtick=1, row=len(params), col=1)
    figure.update_layout(
        title={"text": f"{title}: {len(members)} members, coloured by {plain(objective)}"},
        coloraxis={
            "colorscale": "Viridis",
            "reversescale": not maximize,  # the best segments brightest
            "colorbar": {"title": {"text": plain(objective)}},
        },
        legend={"orientation": "h", "yanchor": "bottom", "y": 1.02, "xanchor": "right", "x": 1.0},
        height=max(360, 220 * len(params)),
    )
    return figure


def to_json(figure: go.Figure) -> str:
    """The figure as plotly.js takes it, large scatter traces switched to WebGL."""
    data = figure.to_plotly_json()
    for trace in data.get("data") or []:
        if trace.get("type") == "scatter" and len(trace.get("x") if trace.get("x") is not None else ()) > GL_POINTS:
            trace["type"] = "scattergl"
    return plotly.io.json.to_json_plotly(data)


def figure(
    kind: str,
    spec: dict,
    trials: Sequence[dict],
    *,
    study: TrialStudy | None = None,
    metric: str | None = None,
    chosen: Sequence[str] = (),
) -> go.Figure:
    """One of KINDS; `study` is the experiment's (built once, shared by the kinds that use it).
    `metric` is the curves' metric, or the objective an OBJECTIVE_KINDS figure shows (with
    several objectives; a ValueError if it is not one of them)."""
    if kind == "curves":
        return curves(spec, trials, metric, chosen)
    if kind == "schedule":
        return schedule(spec, trials)
    ts = study or build_study(spec, trials)
    if kind == "pareto":
        return noted(pareto(ts), "not enough succeeded trials to draw this yet")
    index = ts.objective(metric) if ts.multi else 0
    drawn = {"history": history, "parallel": parallel, "importance": importance, "slice": slices}[kind](ts, index)
    return noted(drawn, "not enough succeeded trials to draw this yet")


def noted(figure: go.Figure, note: str) -> go.Figure:
    """A figure with nothing to draw says why, once (the page shows that line instead of axes)."""
    if not figure.data and not figure.layout.annotations:
        figure.add_annotation(text=note, showarrow=False, xref="paper", yref="paper", x=0.5, y=0.5)
    return figure
