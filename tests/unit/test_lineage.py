"""A pbt experiment's lineage as users see it: the forest of segments (client/lineage.py), `kubectl
hpo trials EXP --lineage` (cli/trials.py) and the dashboard's schedule plot (dashboard/figures.py),
over populations run in memory (tests/support/population.py)."""

from __future__ import annotations

import json

from hpo_operator.cli.trials import lineage_rows
from hpo_operator.client.lineage import forest, rows, segments
from hpo_operator.client.views import trial_summary
from hpo_operator.dashboard import figures
from tests.support import population as sim


def population(generations: int = 4, oom=frozenset({("g001-m002", 1)})) -> tuple[dict, list[dict]]:
    spec = sim.spec(population=4, generations=generations)
    cluster = sim.PopulationCluster(spec, oom=oom).run()
    trials = []
    for body in cluster.trials.values():
        body["metadata"]["namespace"] = "default"
        trials.append(body)
    return spec.model_dump(by_alias=True, exclude_none=True, mode="json"), trials


def test_each_segment_is_one_node_under_the_segment_it_started_from():
    _, trials = population()
    summaries = [trial_summary(t) for t in trials]
    roots = forest(summaries)
    assert [(r.generation, r.member) for r in roots] == [(0, m) for m in range(4)]
    seen = {}
    stack = list(roots)
    while stack:
        node = stack.pop()
        seen[(node.generation, node.member)] = node
        for child in node.children:
            assert child.generation == node.generation + 1 and child.parent == node.trial
            assert child.parent_member == node.member
            assert child.exploited == (child.member != node.member)
            stack.append(child)
    assert len(seen) == 16  # 4 members x 4 generations, each once
    retried = seen[(1, 2)]
    assert (retried.trial, retried.attempts, retried.phase) == ("exp-g001-m002-a2", 2, "Succeeded")


def test_a_parent_named_by_its_retry_holds_its_children():
    _, trials = population(oom=frozenset((f"g001-m00{m}", 1) for m in range(4)))
    nodes = segments(trial_summary(t) for t in trials)
    named = {n.parent for n in nodes if n.generation == 2}
    assert named and all(p.endswith("-a2") for p in named)  # every parent succeeded on its retry
    roots = forest(trial_summary(t) for t in trials)
    for parent in named:
        node = next(n for r in roots for n in _walk(r) if n.trial == parent)
        assert {c.trial for c in node.children} == {n.trial for n in nodes if n.parent == parent}


def _walk(node):
    out, stack = [], [node]
    while stack:
        n = stack.pop()
        out.append(n)
        stack.extend(n.children)
    return out


def test_the_drawing_keeps_a_members_own_line_in_its_column_and_branches_exploits():
    _, trials = population()
    drawn = rows(forest(trial_summary(t) for t in trials))
    assert len(drawn) == 16
    for prefix, node in drawn:
        if node.exploited:
            assert prefix.endswith(("├─ ", "└─ ")), (prefix, node.trial)
        elif node.generation:
            assert not prefix.endswith(("├─ ", "└─ ")), (prefix, node.trial)
    assert drawn[0] == ("", drawn[0][1]) and drawn[0][1].trial == "exp-g000-m000"


def test_a_deep_lineage_is_drawn_without_recursion():
    _, trials = population(generations=1, oom=frozenset())
    # 3,000 generations of one member, as the API would hold them.
    chain = []
    for g in range(3000):
        body = json.loads(json.dumps(trials[0]))
        body["metadata"]["name"] = f"exp-g{g:03d}-m000"
        body["spec"]["segment"] = {"member": 0, "generation": g}
        if g:
            body["spec"]["segment"].update(parent=f"exp-g{g - 1:03d}-m000", parentMember=0)
        chain.append(body)
    drawn = rows(forest(trial_summary(t) for t in chain))
    assert len(drawn) == 3000 and all(prefix == "" for prefix, _ in drawn)


def test_kubectl_hpo_lineage_rows_name_the_member_each_segment_exploited():
    _, trials = population()
    columns, table = lineage_rows(forest(trial_summary(t) for t in trials))
    assert columns[:5] == ["SEGMENT", "MEMBER", "GENERATION", "FROM", "STATUS"]
    by_name = {row[0].lstrip("│├└─ "): row for row in table}
    exploited = [t for t in trials if t["spec"]["segment"].get("exploited")]
    assert exploited
    for t in exploited:
        row = by_name[t["metadata"]["name"]]
        assert row[3] == f"exploited m{t['spec']['segment']['parentMember']}"
    assert by_name["exp-g001-m002-a2"][6] == 2  # attempts


def test_the_schedule_plot_draws_every_segment_coloured_by_its_objective_with_exploits_marked():
    spec, trials = population()
    figure = figures.figure("schedule", spec, trials)
    panels = [a.text for a in figure.layout.annotations]
    assert panels == ["h0", "h1"]
    markers = [t for t in figure.data if t.mode == "markers" and t.name == "segment"]
    assert len(markers) == 2 and all(len(t.x) == 16 for t in markers)
    nodes = segments(trial_summary(t) for t in trials)
    assert list(markers[0].marker.color) == [n.objective_value for n in nodes]
    exploited = sum(n.exploited for n in nodes)
    assert exploited and list(markers[0].marker.symbol).count("star") == exploited
    jumps = [t for t in figure.data if t.name == "exploit"]
    assert [len([x for x in t.x if x is not None]) for t in jumps] == [2 * exploited] * 2
    assert figure.layout.coloraxis.reversescale is False  # maximised: the best brightest
    assert json.loads(figures.to_json(figure))["data"]


def test_the_schedule_plot_says_it_is_for_pbt_on_other_experiments():
    spec = sim.spec().model_dump(by_alias=True, exclude_none=True, mode="json")
    spec["algorithm"] = {"name": "random"}
    figure = figures.figure("schedule", spec, [])
    assert "for population-based training" in figure.layout.annotations[0].text
