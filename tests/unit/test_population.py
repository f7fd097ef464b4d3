"""Population-based training: exploit and explore (search/population.py), the segments' claims and
copy step (workloads/population.py), the planner's generations (planner/population.py), and whole
populations run in memory, with the operator killed after any write (tests/support/population.py)."""

from __future__ import annotations

import json
import random
import subprocess
from pathlib import Path

import pytest

from hpo_operator.api.algorithms import SettingsError
from hpo_operator.api.parameters import Parameter
from hpo_operator.core.podstate import PodObservation
from hpo_operator.planner import population as planned
from hpo_operator.search import population as pbt
from hpo_operator.workloads import checkpoint
from hpo_operator.workloads import population as segments
from hpo_operator.workloads.kinds import build_workload
from hpo_operator.workloads.observe import observe_workload
from tests.support import population as sim
from tests.support import rounds as r

H0 = Parameter(name="h0", type="double", min=0, max=1)
LR = Parameter(name="lr", type="double", min=1e-4, max=1e-1, log=True)
STEPPED = Parameter(name="s", type="double", min=0, max=1, step=0.25)
LAYERS = Parameter(name="layers", type="int", min=1, max=8)
OPT = Parameter(name="opt", type="categorical", values=["sgd", "adam", "rmsprop"])
BATCH = Parameter(name="batch", type="discrete", values=["16", "32", "64"])
SPACE = [H0, LR, STEPPED, LAYERS, OPT, BATCH]


def schedule(**kw) -> pbt.Schedule:
    base = dict(
        population=4, generations=3, interval=4, quantile=0.25, resample_probability=0.25, factors=(0.8, 1.2), seed=7
    )
    return pbt.Schedule(**{**base, **kw})


def valid(param: Parameter, text: str) -> bool:
    if param.type in ("categorical", "discrete"):
        return text in (param.values or [])
    value = float(text)
    assert param.min is not None and param.max is not None
    if not param.min <= value <= param.max:
        return False
    if param.type == "int" and value != int(value):
        return False
    if param.step:
        steps = (value - param.min) / param.step
        return abs(steps - round(steps)) < 1e-9
    return True


# --- search/population.py: the draws ----------------------------------------------------------------


def test_a_members_first_values_lie_in_the_space_and_are_the_same_for_the_same_seed_and_member():
    plan = schedule()
    first = [pbt.initial(SPACE, plan, m) for m in range(20)]
    assert first == [pbt.initial(SPACE, plan, m) for m in range(20)]
    for values in first:
        assert all(valid(p, values[p.name]) for p in SPACE), values
    assert len({json.dumps(v, sort_keys=True) for v in first}) == 20  # members differ
    assert first != [pbt.initial(SPACE, schedule(seed=8), m) for m in range(20)]


def test_log_scale_draws_spread_over_the_decades():
    draws = [float(pbt.sample(LR, random.Random(i))) for i in range(400)]
    decades = [sum(1 for d in draws if 10 ** -(k + 1) <= d < 10**-k) for k in (1, 2, 3)]
    assert min(decades) > 100, decades  # uniform draws would sit 90% in the top decade


def test_a_perturbation_multiplies_by_one_of_the_factors_within_the_bounds_and_the_grid():
    seen = set()
    for i in range(50):
        value = pbt.perturb(H0, "0.5", random.Random(i), (0.8, 1.2))
        seen.add(value)
    assert seen == {"0.4", "0.6"}
    assert pbt.perturb(H0, "0.9", random.Random(1), (1.5,)) == "1.0"  # clamped to max
    assert {pbt.perturb(STEPPED, "0.5", random.Random(i), (0.8, 1.2)) for i in range(30)} == {"0.5"}  # back on grid
    assert {pbt.perturb(STEPPED, "0.75", random.Random(i), (0.5,)) for i in range(5)} <= {"0.25", "0.5"}
    ints = {pbt.perturb(LAYERS, "5", random.Random(i), (0.8, 1.2)) for i in range(50)}
    assert ints == {"4", "6"}


def test_a_categorical_or_discrete_value_moves_to_a_neighbour_and_stays_in_its_list():
    assert {pbt.perturb(OPT, "adam", random.Random(i), (0.8,)) for i in range(40)} == {"sgd", "rmsprop"}
    assert {pbt.perturb(BATCH, "16", random.Random(i), (0.8,)) for i in range(40)} == {"16", "32"}


def test_resample_probability_one_draws_afresh_and_zero_only_perturbs():
    values = {"h0": "0.5", "lr": "0.01", "s": "0.5", "layers": "4", "opt": "adam", "batch": "32"}
    for i in range(20):
        perturbed = pbt.explore(SPACE, values, random.Random(i), schedule(resample_probability=0.0))
        assert perturbed["h0"] in ("0.4", "0.6") and perturbed["opt"] in ("sgd", "rmsprop"), perturbed
    fresh = [pbt.explore(SPACE, values, random.Random(i), schedule(resample_probability=1.0)) for i in range(20)]
    assert len({v["h0"] for v in fresh}) == 20  # drawn anywhere in [0, 1], not 0.4 or 0.6
    assert all(valid(p, v[p.name]) for v in fresh for p in SPACE)


def test_members_are_ranked_best_first_by_direction_with_ties_by_member():
    results = {0: 0.5, 1: 0.9, 2: None, 3: 0.5, 4: 0.1}
    assert pbt.ranked(results, "maximize") == [1, 0, 3, 4]
    assert pbt.ranked(results, "minimize") == [4, 0, 3, 1]


@pytest.mark.parametrize("population, quantile, truncated", [(4, 0.25, 1), (8, 0.25, 2), (2, 0.25, 1), (10, 0.5, 5)])
def test_the_truncation_is_a_quantile_of_the_population_and_at_least_one_member(population, quantile, truncated):
    assert schedule(population=population, quantile=quantile).truncated == truncated


def test_the_worst_quantile_exploits_one_of_the_best_and_the_others_go_on_unchanged():
    plan = schedule(population=8, quantile=0.25)
    values = {m: {"h0": str(m / 10)} for m in range(8)}
    results = {m: float(m) for m in range(8)}  # maximize: 7 and 6 are best, 0 and 1 worst
    steps = pbt.next_generation([H0], plan, 1, results, values, "maximize")
    assert steps is not None
    by_member = {s.member: s for s in steps}
    assert [s.member for s in steps] == list(range(8))
    for m in (0, 1):
        s = by_member[m]
        assert s.exploited and s.parent_member in (6, 7)
        assert s.values != values[m]  # its parent's, explored
    for m in range(2, 8):
        assert by_member[m] == pbt.Step(m, m, False, values[m])
    # The same inputs, the same decisions (a restarted operator decides as the first did).
    assert steps == pbt.next_generation([H0], plan, 1, results, values, "maximize")
    # Another generation draws anew.
    assert steps != pbt.next_generation([H0], plan, 2, results, values, "maximize")


def test_a_member_without_a_result_exploits_even_when_it_is_not_among_the_worst():
    plan = schedule(population=4, quantile=0.25)
    values = {m: {"h0": "0.5"} for m in range(4)}
    steps = pbt.next_generation([H0], plan, 1, {0: 1.0, 1: None, 2: 3.0, 3: 2.0}, values, "maximize")
    assert steps is not None
    exploiting = {s.member: s.parent_member for s in steps if s.exploited}
    assert exploiting == {0: 2, 1: 2}  # 0 is the worst with a result, 1 failed; 2 is the best


def test_when_fewer_members_have_a_result_than_the_quantile_they_are_all_parents():
    plan = schedule(population=8, quantile=0.5)
    values = {m: {"h0": "0.5"} for m in range(8)}
    steps = pbt.next_generation([H0], plan, 1, {m: (1.0 if m == 5 else None) for m in range(8)}, values, "minimize")
    assert steps is not None
    assert {s.member: s.parent_member for s in steps} == {**{m: 5 for m in range(8)}}
    assert [s.exploited for s in steps] == [m != 5 for m in range(8)]


def test_a_generation_in_which_no_member_has_a_result_leaves_nothing_to_go_on_from():
    values = {m: {"h0": "0.5"} for m in range(4)}
    assert pbt.next_generation([H0], schedule(), 1, dict.fromkeys(range(4)), values, "maximize") is None


def test_the_schedule_reads_the_settings_with_their_defaults_and_seeds_from_the_uid_without_a_seed():
    plan = pbt.schedule(sim.spec(population=5, generations=3, interval=7), "uid")
    assert plan == pbt.Schedule(5, 3, 7, 0.25, 0.25, (0.8, 1.2), 7)
    unseeded = sim.spec(algorithm={"name": "pbt", "settings": [{"name": "populationSize", "value": "2"}]})
    assert pbt.schedule(unseeded, "a").seed == pbt.schedule(unseeded, "a").seed != pbt.schedule(unseeded, "b").seed
    bad = sim.spec(
        algorithm={
            "name": "pbt",
            "settings": [{"name": "populationSize", "value": "4"}, {"name": "truncationQuantile", "value": "0.7"}],
        }
    )
    with pytest.raises(SettingsError, match="truncationQuantile"):
        pbt.schedule(bad, "uid")


# --- workloads/population.py: the segment's pod --------------------------------------------------------


def segment_trial(name: str, member: int, generation: int, parent_member: int | None = None, attempt: int = 1):
    segment = {"member": member, "generation": generation}
    if generation:
        segment.update(parent=f"exp-{segments.key(generation - 1, parent_member)}", parentMember=parent_member)
        segment["exploited"] = parent_member != member
    return {
        "apiVersion": "hpo.dev/v1alpha1",
        "kind": "Trial",
        "metadata": {
            "name": name,
            "namespace": "ns",
            "uid": f"uid-{name}",
            "labels": {"hpo.dev/config": segments.key(generation, member)},
        },
        "spec": {
            "experimentName": "exp",
            "attempt": attempt,
            "parameters": [{"name": "h0", "value": "0.5"}, {"name": "h1", "value": "0.25"}],
            "segment": segment,
        },
    }


def program(pod_spec: dict) -> dict:
    return next(c for c in pod_spec["containers"] if c["name"] == "train")


def test_a_segment_mounts_its_own_claims_data_and_its_parents_claim_read_only_in_the_copy_step():
    spec = sim.spec(interval=5)
    spec.trial_template.template["spec"]["containers"][0].update(
        securityContext={"runAsNonRoot": True}, resources={"limits": {"memory": "64Mi"}}, imagePullPolicy="Never"
    )
    _, pod = build_workload(spec, "exp", segment_trial("exp-g002-m001", 1, 2, parent_member=3))
    pod_spec = pod["spec"]
    volumes = {v["name"]: v["persistentVolumeClaim"] for v in pod_spec["volumes"]}
    assert volumes == {
        "hpo-checkpoint": {"claimName": "exp-ckpt-g002-m001"},
        "hpo-checkpoint-parent": {"claimName": "exp-ckpt-g001-m003", "readOnly": True},
    }
    (step,) = pod_spec["initContainers"]
    assert step["name"] == "hpo-checkpoint-copy" and step["image"] == "trainer:1"
    assert step["command"][:2] == ["sh", "-c"]
    assert {m["name"]: (m["mountPath"], m.get("readOnly", False)) for m in step["volumeMounts"]} == {
        "hpo-checkpoint": ("/hpo-segment/own", False),
        "hpo-checkpoint-parent": ("/hpo-segment/parent", True),
    }
    # The step runs as the program does, within its resources.
    assert step["securityContext"] == {"runAsNonRoot": True} and step["resources"] == {"limits": {"memory": "64Mi"}}
    assert step["imagePullPolicy"] == "Never"
    train = program(pod_spec)
    assert train["volumeMounts"] == [{"name": "hpo-checkpoint", "mountPath": "/ckpt", "subPath": "data"}]
    env = {e["name"]: e["value"] for e in train["env"]}
    assert env == {
        "HPO_CHECKPOINT_DIR": "/ckpt",
        "HPO_RESUME": "1",
        "HPO_PBT_MEMBER": "1",
        "HPO_PBT_GENERATION": "2",
        "HPO_PBT_END_STEP": "15",
        "HPO_PBT_PARENT": "exp-g001-m003",
    }


def test_a_first_segment_starts_empty_without_resume_and_its_retry_does_too():
    for attempt in (1, 2):
        _, pod = build_workload(sim.spec(), "exp", segment_trial("exp-g000-m002", 2, 0, attempt=attempt))
        pod_spec = pod["spec"]
        assert [v["name"] for v in pod_spec["volumes"]] == ["hpo-checkpoint"]
        (step,) = pod_spec["initContainers"]
        assert {e["name"]: e["value"] for e in step["env"]}["HPO_PBT_PARENT_CLAIM"] == ""
        env = {e["name"]: e["value"] for e in program(pod_spec)["env"]}
        assert "HPO_RESUME" not in env and "HPO_PBT_PARENT" not in env and env["HPO_PBT_END_STEP"] == "4"


def test_a_segments_placeholders_say_its_member_generation_and_end_step():
    spec = sim.spec(interval=10)
    spec.trial_template.template["spec"]["containers"][0]["args"] = [
        "--member=${trial.member}",
        "--generation=${trial.generation}",
        "--until=${trial.endStep}",
        "--ckpt=${trial.checkpointDir}",
    ]
    _, pod = build_workload(spec, "exp", segment_trial("exp-g003-m000", 0, 3, parent_member=0))
    assert program(pod["spec"])["args"] == ["--member=0", "--generation=3", "--until=40", "--ckpt=/ckpt"]


def test_a_job_segment_gets_the_copy_step_in_its_pod_template():
    spec = sim.spec(
        trialTemplate={
            "checkpoint": {"volumeClaimTemplate": {"size": "1Mi"}, "mountPath": "/ckpt", "copyImage": "busybox:1"},
            "job": {"spec": {"template": {"spec": {"containers": [{"name": "train", "image": "distroless:1"}]}}}},
        }
    )
    _, job = build_workload(spec, "exp", segment_trial("exp-g001-m000", 0, 1, parent_member=2))
    template = job["spec"]["template"]["spec"]
    assert [c["image"] for c in template["initContainers"]] == ["busybox:1"]
    assert {v["name"] for v in template["volumes"]} == {"hpo-checkpoint", "hpo-checkpoint-parent"}


def copy_step(
    tmp_path: Path,
    parent_claim: str = "exp-ckpt-g000-m000",
    origin: str = '{"segment":"s"}',
    path: str = "/usr/bin:/bin",
):
    """Runs the copy step's script with its two mounts as directories under tmp_path."""
    own, parent = tmp_path / "own", tmp_path / "parent"
    own.mkdir(exist_ok=True)
    script = segments.COPY_SCRIPT.replace(segments.OWN_MOUNT, str(own)).replace(segments.PARENT_MOUNT, str(parent))
    script = script.replace("/dev/termination-log", str(tmp_path / "termination-log"))
    env = {"PATH": path, "HPO_PBT_PARENT": "exp-g000-m000", "HPO_PBT_PARENT_CLAIM": parent_claim}
    env["HPO_PBT_ORIGIN"] = origin
    return subprocess.run(["sh", "-c", script], env=env, capture_output=True, text=True, timeout=30)


def parent_checkpoint(tmp_path: Path) -> Path:
    data = tmp_path / "parent" / "data"
    (data / "weights").mkdir(parents=True)
    (data / "weights" / "w.npy").write_text("parent's weights")
    (data / "step").write_text("8")
    (data / ".hpo-origin").write_text('{"segment":"exp-g000-m000"}\n')
    return data


def test_the_copy_step_copies_the_parents_data_and_leaves_its_marker_last(tmp_path):
    parent = parent_checkpoint(tmp_path)
    done = copy_step(tmp_path, origin='{"segment":"exp-g001-m002"}')
    assert done.returncode == 0, done.stderr
    data = tmp_path / "own" / "data"
    assert (data / "weights" / "w.npy").read_text() == "parent's weights" and (data / "step").read_text() == "8"
    assert (data / ".hpo-origin").read_text() == '{"segment":"exp-g001-m002"}\n'
    assert sorted(p.name for p in (tmp_path / "own").iterdir()) == ["data"]  # no .incoming left
    assert (parent / ".hpo-origin").read_text() == '{"segment":"exp-g000-m000"}\n'  # the parent's untouched


def test_a_retry_of_the_segment_replaces_what_its_failed_attempt_wrote(tmp_path):
    parent_checkpoint(tmp_path)
    assert copy_step(tmp_path).returncode == 0
    data = tmp_path / "own" / "data"
    (data / "step").write_text("11")  # the failed attempt trained on, then died
    (data / "half-written").write_text("...")
    (tmp_path / "own" / ".incoming").mkdir()  # and an earlier copy step died mid-copy
    assert copy_step(tmp_path).returncode == 0
    assert (data / "step").read_text() == "8" and not (data / "half-written").exists()
    assert sorted(p.name for p in (tmp_path / "own").iterdir()) == ["data"]


def test_a_first_segment_starts_from_an_empty_directory_each_attempt(tmp_path):
    assert copy_step(tmp_path, parent_claim="").returncode == 0
    (tmp_path / "own" / "data" / "step").write_text("3")
    assert copy_step(tmp_path, parent_claim="").returncode == 0
    assert sorted(p.name for p in (tmp_path / "own" / "data").iterdir()) == [".hpo-origin"]


def test_a_parent_checkpoint_without_its_marker_is_refused_with_the_lost_exit_code(tmp_path):
    parent = parent_checkpoint(tmp_path)
    (parent / ".hpo-origin").unlink()
    done = copy_step(tmp_path)
    assert done.returncode == segments.COPY_LOST
    assert "is not whole" in (tmp_path / "termination-log").read_text()
    assert not (tmp_path / "own" / "data").exists()


def test_a_copy_that_fails_half_way_leaves_the_segments_data_as_it_was(tmp_path):
    parent_checkpoint(tmp_path)
    assert copy_step(tmp_path).returncode == 0
    (tmp_path / "own" / "data" / "step").write_text("before")
    # A cp that dies after writing part of the copy (a full disk, a lost volume).
    broken = tmp_path / "bin"
    broken.mkdir()
    (broken / "cp").write_text('#!/bin/sh\nmkdir -p "$3" && echo partial > "$3/step" && exit 1\n')
    (broken / "cp").chmod(0o755)
    done = copy_step(tmp_path, path=f"{broken}:/usr/bin:/bin")
    assert done.returncode not in (0, segments.COPY_LOST)
    assert (tmp_path / "own" / "data" / "step").read_text() == "before"  # never half-replaced
    assert copy_step(tmp_path).returncode == 0  # the retry copies whole
    assert (tmp_path / "own" / "data" / "step").read_text() == "8"
    assert sorted(p.name for p in (tmp_path / "own").iterdir()) == ["data"]


def observed(code: int | None, reason: str = "Error", message: str = "") -> PodObservation:
    pod = {
        "status": {
            "phase": "Failed",
            "initContainerStatuses": [
                {
                    "name": "hpo-checkpoint-copy",
                    "state": {"terminated": {"exitCode": code, "reason": reason, "message": message}},
                }
            ],
        }
    }
    return segments.copy_failure(pod, PodObservation("Failed", "PodFailed", "the pod failed", "Error"))


def test_a_failed_copy_step_is_classed_by_why_it_failed():
    lost = observed(segments.COPY_LOST, message="the checkpoint of parent segment p is not whole")
    assert (lost.reason, lost.failure_class) == ("CheckpointLost", "Startup") and "not whole" in lost.message
    io = observed(1, message="cp: write error: No space left on device")
    assert (io.reason, io.failure_class) == ("CheckpointCopyFailed", "Infrastructure") and "No space" in io.message
    no_shell = observed(128, reason="StartError")
    assert (no_shell.reason, no_shell.failure_class) == ("CheckpointCopyFailed", "Startup")
    assert "copyImage" in no_shell.message
    assert observed(0).reason == "PodFailed"  # the copy went well: the program failed
    running = PodObservation("Running", "Running")
    assert segments.copy_failure({"status": {}}, running) is running


# --- planner/population.py: rounds by hand ------------------------------------------------------------


def segment_view(member: int, generation: int, phase: str | None = None, value: float | None = None, **kw):
    name = f"{r.EXP}-{segments.key(generation, member)}"
    attempt = kw.pop("attempt", 1)
    status = {}
    if value is not None:
        status.update(objectiveValue=value, metrics=[{"name": "q", "value": value}], completionTime=r.ago(60))
    if phase == "Failed":
        status.update(failureClass=kw.pop("failure_class", "Error"), reason="Error", completionTime=r.ago(60))
    t = r.trial(
        name if attempt == 1 else f"{name}-a{attempt}",
        kw.pop("values", {"h0": "0.5", "h1": "0.5"}),
        phase=phase,
        status=status,
        attempt=attempt,
        lineage=name,
        launch="Suggestion" if attempt == 1 else "Retry",
        retry_of=None if attempt == 1 else name,
    )
    labels = {**t.labels, "hpo.dev/config": segments.key(generation, member)}
    body = {**t.body, "metadata": {**t.meta, "labels": labels}}
    body["spec"] = {
        **body["spec"],
        "segment": segment_trial(name, member, generation, kw.pop("parent", member))["spec"]["segment"],
    }
    t.body = body
    return t


def plan(spec, trials, pods=None, volumes=None, workloads=None):
    exp = r.ExperimentView(r.EXP, r.NS, r.EXP_UID, 1, spec, {})
    trials = list(trials)
    return r.planner.plan(
        r.planner.RoundInput(
            experiment=exp,
            trials=trials,
            pods=pods or {},
            now=r.NOW,
            suggest=lambda i: None,
            volumes=volumes,
            workloads=workloads,
        )
    )


def test_the_first_round_makes_every_member_of_generation_zero_and_starts_what_slots_allow():
    spec = sim.spec(population=3, generations=2, parallelTrialCount=2)
    p = plan(spec, [])
    assert r.created_names(p) == ["exp-g000-m000", "exp-g000-m001", "exp-g000-m002"]
    assert p.start_workloads == ["exp-g000-m000", "exp-g000-m001"]
    body = r.created(p, "exp-g000-m001")
    assert body["spec"]["segment"] == {"member": 1, "generation": 0}
    labels = body["metadata"]["labels"]
    assert (labels["hpo.dev/config"], labels["hpo.dev/member"], labels["hpo.dev/generation"]) == ("g000-m001", "1", "0")
    plan_values = pbt.schedule(spec, r.EXP_UID)
    assert {x["name"]: x["value"] for x in body["spec"]["parameters"]} == pbt.initial(spec.parameters, plan_values, 1)
    assert r.exp_status(p)["phase"] == "Running"


def test_the_next_generation_waits_until_every_segment_of_this_one_has_ended_for_good():
    spec = sim.spec(population=2, generations=2)
    done = segment_view(0, 0, "Succeeded", 0.5)
    running = {"exp-g000-m001": r.pod_running("exp-g000-m001")}
    assert r.created_names(plan(spec, [done, segment_view(1, 0, "Running")], running)) == []
    # An OOMKilled segment with retries left is retried, and holds the generation meanwhile.
    oom = segment_view(1, 0, "Failed", failure_class="OOMKilled")
    p = plan(spec, [done, oom])
    assert r.created_names(p) == ["exp-g000-m001-a2"]
    assert r.created(p, "exp-g000-m001-a2")["spec"]["segment"] == {"member": 1, "generation": 0}


def test_the_next_generation_records_each_members_parent_and_whether_it_exploited():
    spec = sim.spec(population=4, generations=2)
    gen0 = [segment_view(m, 0, "Succeeded", value) for m, value in enumerate([0.4, 0.9, 0.1, 0.6])]
    # Member 1's segment succeeded on its second attempt: that attempt is the parent.
    gen0[1] = segment_view(1, 0, "Succeeded", 0.9, attempt=2)
    first = segment_view(1, 0, "Failed", failure_class="OOMKilled")
    p = plan(spec, [*gen0, first])
    made = {b["metadata"]["name"]: b["spec"]["segment"] for b in p.create_trials}
    assert made == {
        "exp-g001-m000": {"member": 0, "generation": 1, "parent": "exp-g000-m000", "parentMember": 0},
        "exp-g001-m001": {"member": 1, "generation": 1, "parent": "exp-g000-m001-a2", "parentMember": 1},
        "exp-g001-m002": {
            "member": 2,
            "generation": 1,
            "parent": "exp-g000-m001-a2",
            "parentMember": 1,
            "exploited": True,
        },
        "exp-g001-m003": {"member": 3, "generation": 1, "parent": "exp-g000-m003", "parentMember": 3},
    }
    values = {b["metadata"]["name"]: {x["name"]: x["value"] for x in b["spec"]["parameters"]} for b in p.create_trials}
    assert values["exp-g001-m000"] == {"h0": "0.5", "h1": "0.5"}
    assert values["exp-g001-m002"] != {"h0": "0.5", "h1": "0.5"}  # explored from its parent's


def test_a_segment_whose_parents_claim_is_gone_fails_as_checkpoint_lost_and_its_member_exploits_next():
    spec = sim.spec(population=2, generations=3)
    gen0 = [segment_view(0, 0, "Succeeded", 0.9), segment_view(1, 0, "Succeeded", 0.5)]
    gen1 = [segment_view(0, 1, "Pending", parent=0), segment_view(1, 1, "Pending", parent=1)]
    claims = {"exp-ckpt-g000-m000", "exp-ckpt-g001-m000", "exp-ckpt-g001-m001"}  # g000-m001's was deleted
    p = plan(spec, [*gen0, *gen1], volumes=claims)
    st = r.trial_statuses(p)["exp-g001-m001"]
    assert (st["phase"], st["reason"], st["failureClass"]) == ("Failed", "CheckpointLost", "Startup")
    assert "exp-ckpt-g000-m001" in st["message"]
    assert "exp-g001-m001" not in p.start_workloads and "exp-g001-m000" in p.start_workloads
    assert r.created_names(p) == []  # not retried: the data is gone
    # Once generation 1 has ended, member 1 (no result) exploits member 0.
    gen1 = [segment_view(0, 1, "Succeeded", 1.0, parent=0), segment_view(1, 1, "Failed", parent=1)]
    gen1[1].body["status"]["reason"] = "CheckpointLost"
    gen1[1].body["status"]["failureClass"] = "Startup"
    gen1[1].body = dict(gen1[1].body)
    p = plan(spec, [*gen0, *gen1], volumes=claims)
    made = {b["metadata"]["name"]: b["spec"]["segment"] for b in p.create_trials}
    assert made["exp-g002-m001"] == {
        "member": 1,
        "generation": 2,
        "parent": "exp-g001-m000",
        "parentMember": 0,
        "exploited": True,
    }


def test_a_segment_that_already_mounted_its_parent_goes_on_when_the_claim_is_deleted():
    spec = sim.spec(population=2, generations=2)
    gen0 = [segment_view(0, 0, "Succeeded", 0.9), segment_view(1, 0, "Succeeded", 0.5)]
    copying = r.pod("exp-g001-m001", "Pending", {"waiting": {"reason": "PodInitializing"}}, created=r.ago(10))
    copying["status"]["initContainerStatuses"] = [
        {"name": "hpo-checkpoint-copy", "state": {"running": {"startedAt": r.EARLIER}}}
    ]
    waiting = r.pod_pending("exp-g001-m000", created=r.ago(10))
    trials = [*gen0, segment_view(0, 1, "Pending", parent=0), segment_view(1, 1, "Pending", parent=1)]
    p = plan(spec, trials, {"exp-g001-m001": copying, "exp-g001-m000": waiting}, volumes=set())
    statuses = r.trial_statuses(p)
    assert statuses["exp-g001-m000"]["reason"] == "CheckpointLost"  # not mounted yet: fails
    assert statuses.get("exp-g001-m001", {}).get("phase") != "Failed"  # copying already: goes on
    assert p.delete_workloads == ["exp-g001-m000"]


def test_a_job_segment_held_by_its_queue_has_not_mounted_its_parent_whatever_its_old_pod_does():
    # Suspended by its queue (preempted), its last pod still terminating: its next pod, which would
    # copy the parent's checkpoint, cannot start once that claim is gone.
    template = {"spec": {"template": {"spec": {"containers": [{"name": "train", "image": "trainer:1"}]}}}}
    tt = {"checkpoint": {"volumeClaimTemplate": {"size": "1Mi"}, "mountPath": "/ckpt"}, "job": template}
    spec = sim.spec(population=2, generations=2, trialTemplate={**tt, "queueName": "team-queue"})
    gen0 = [segment_view(0, 0, "Succeeded", 0.9), segment_view(1, 0, "Succeeded", 0.5)]
    job = {"metadata": {"name": "exp-g001-m000", "namespace": r.NS, "uid": "job"}, "spec": {"suspend": True}}
    seen = observe_workload("Job", job, [r.pod_running("exp-g001-m000-x7k2p")], now=r.NOW)
    trials = [*gen0, segment_view(0, 1, "Queued", parent=0)]
    p = plan(spec, trials, {"exp-g001-m000": seen.pod}, volumes=set(), workloads={"exp-g001-m000": seen})
    assert r.trial_statuses(p)["exp-g001-m000"]["reason"] == "CheckpointLost"


def test_a_segment_that_resumed_names_its_parent_segment_as_where_it_resumed_from():
    spec = sim.spec(population=2, generations=2)
    gen0 = [segment_view(0, 0, "Succeeded", 0.9), segment_view(1, 0, "Succeeded", 0.5, attempt=2)]
    child = segment_view(0, 1, "Running", parent=1)
    child.body["spec"]["segment"]["parent"] = "exp-g000-m001-a2"
    child.body = dict(child.body)
    pods = {"exp-g001-m000": r.pod_succeeded("exp-g001-m000", '{"q": 1.0, "resumed_step": 4}')}
    st = r.trial_statuses(plan(spec, [*gen0, child], pods))["exp-g001-m000"]
    assert st["phase"] == "Succeeded"
    assert st["resumedFrom"] == {"trial": "exp-g000-m001-a2", "attempt": 2, "step": 4}


def test_claims_not_known_yet_fail_no_segment():
    spec = sim.spec(population=2, generations=2)
    gen0 = [segment_view(0, 0, "Succeeded", 0.9), segment_view(1, 0, "Succeeded", 0.5)]
    p = plan(spec, [*gen0, segment_view(0, 1, "Pending", parent=0)], volumes=None)
    assert "exp-g001-m000" not in r.trial_statuses(p) or r.trial_statuses(p)["exp-g001-m000"]["phase"] != "Failed"


def test_a_generation_in_which_every_member_failed_fails_the_experiment():
    spec = sim.spec(population=2, generations=3)
    gen0 = [segment_view(m, 0, "Failed", failure_class="Error") for m in range(2)]
    p = plan(spec, gen0)
    st = r.exp_status(p)
    assert st["phase"] == "Failed" and r.created_names(p) == []
    failed = next(c for c in st["conditions"] if c["type"] == "Failed")
    assert failed["reason"] == "PopulationLost" and "generation 0" in failed["message"]


def test_a_segment_whose_trial_lost_its_spec_segment_fails_the_experiment_rather_than_being_made_again():
    spec = sim.spec(population=2, generations=2)
    pruned = segment_view(0, 0, "Succeeded", 0.9)
    pruned.body["spec"] = {k: v for k, v in pruned.body["spec"].items() if k != "segment"}
    pruned.body = dict(pruned.body)  # as an API server whose Trial CRD has no segment stores it
    p = plan(spec, [pruned, segment_view(1, 0, "Succeeded", 0.5)])
    assert r.created_names(p) == [] and "exp-g000-m000" not in r.trial_statuses(p)
    failed = next(c for c in r.exp_status(p)["conditions"] if c["type"] == "Failed")
    assert (failed["status"], failed["reason"]) == ("True", "PopulationLost")
    assert "exists without its spec.segment" in failed["message"]


def test_the_experiment_succeeds_once_the_last_generation_has_ended():
    spec = sim.spec(population=2, generations=2)
    trials = [segment_view(m, g, "Succeeded", 0.1 * m + g, parent=m) for g in range(2) for m in range(2)]
    st = r.exp_status(plan(spec, trials))
    assert (st["phase"], st["configurations"]) == ("Succeeded", 4)
    assert st["currentOptimalTrial"]["trialName"] == "exp-g001-m001"


def test_a_users_trial_and_a_restart_are_refused_in_a_pbt_experiment():
    spec = sim.spec(population=2, generations=2)
    mine = r.user_trial("mine", {"h0": "0.5", "h1": "0.5"})
    again = segment_view(0, 0, "Failed", failure_class="Error")
    again.body["metadata"]["annotations"] = {"hpo.dev/restart": "now"}
    again.body = dict(again.body)
    p = plan(spec, [mine, again, segment_view(1, 0, "Running")], {"exp-g000-m001": r.pod_running("exp-g000-m001")})
    st = r.trial_statuses(p)
    assert (st["mine"]["phase"], st["mine"]["reason"]) == ("Refused", "PopulationBasedTraining")
    restart = next(c for c in st["exp-g000-m000"]["conditions"] if c["type"] == "RestartAccepted")
    assert (restart["status"], restart["reason"]) == ("False", "PopulationBasedTraining")
    assert r.created_names(p) == []


def test_retention_removes_a_generations_claims_once_the_next_has_ended_and_keeps_the_last():
    spec = sim.spec(population=2, generations=3)
    trials = [segment_view(m, g, "Succeeded", 0.5, parent=m) for g in range(2) for m in range(2)]
    claims = {checkpoint.claim_name(r.EXP, segments.key(g, m)) for g in range(3) for m in range(2)}
    # Generation 1 has ended: generation 0's claims go; generation 1's stay (generation 2 copies them).
    assert plan(spec, trials, volumes=claims).delete_volumes == ["exp-ckpt-g000-m000", "exp-ckpt-g000-m001"]
    trials += [segment_view(m, 2, "Succeeded", 0.5, parent=m) for m in range(2)]
    assert plan(spec, trials, volumes=claims).delete_volumes == [
        "exp-ckpt-g000-m000",
        "exp-ckpt-g000-m001",
        "exp-ckpt-g001-m000",
        "exp-ckpt-g001-m001",
    ]
    everything = sim.spec(population=2, generations=3)
    everything.trial_template.checkpoint.retention = "Delete"
    assert len(plan(everything, trials, volumes=claims).delete_volumes) == 6
    kept = sim.spec(population=2, generations=3)
    kept.trial_template.checkpoint.retention = "Keep"
    assert plan(kept, trials, volumes=claims).delete_volumes == []


def test_what_the_schema_cannot_check_of_a_pbt_spec_is_invalid():
    bad = sim.spec(
        algorithm={
            "name": "pbt",
            "settings": [{"name": "populationSize", "value": "4"}, {"name": "perturbationFactors", "value": "0.8,-1"}],
        }
    )
    assert any("perturbationFactors" in e for e in planned.validate(bad))
    parallel = sim.spec(
        trialTemplate={
            "checkpoint": {"volumeClaimTemplate": {"size": "1Mi"}, "mountPath": "/ckpt"},
            "job": {"spec": {"parallelism": 2, "template": {"spec": {"containers": [{"name": "t", "image": "t"}]}}}},
        }
    )
    assert any("parallelism and completions must be 1" in e for e in planned.validate(parallel))
    p = plan(bad, [])
    assert r.exp_status(p)["phase"] == "Failed" and r.created_names(p) == []
    unknown = sim.spec()
    unknown.trial_template.template["spec"]["containers"][0]["args"] = ["${trial.member}", "${trial.epoch}"]
    assert [e for e in r.planner.validate_spec(unknown) if "trial.member" in e and "unknown" in e] == [
        "unknown placeholder ${trial.epoch} (use trial.name or trial.attempt or trial.checkpointDir or "
        "trial.member or trial.generation or trial.endStep)"
    ]


# --- whole populations in memory ----------------------------------------------------------------------


def test_a_population_ends_with_exactly_population_times_generations_segments_and_its_lineage():
    cluster = sim.PopulationCluster(sim.spec(population=4, generations=5)).run()
    assert cluster.status["phase"] == "Succeeded" and cluster.status["configurations"] == 20
    assert cluster.segment_keys() == [segments.key(g, m) for g in range(5) for m in range(4)]
    assert len(cluster.trials) == 20
    for t in cluster.trials.values():
        seg = t["spec"]["segment"]
        if seg["generation"]:
            parent = cluster.trials[seg["parent"]]["spec"]["segment"]
            assert (parent["member"], parent["generation"]) == (seg["parentMember"], seg["generation"] - 1)
            assert seg.get("exploited", False) == (seg["parentMember"] != seg["member"])
    assert any(t["spec"]["segment"].get("exploited") for t in cluster.trials.values())
    # Only the last generation's claims are left (DeleteOnSuccess).
    assert sorted(cluster.claims) == [f"exp-ckpt-g004-m00{m}" for m in range(4)]


def test_each_segment_starts_from_its_parents_checkpoint():
    cluster = sim.PopulationCluster(sim.spec(population=3, generations=3)).run()
    for name, start in cluster.starts:
        seg = cluster.trials[name]["spec"]["segment"]
        if seg["generation"] == 0:
            assert start == sim.START
            continue
        parent = cluster.trials[seg["parent"]]
        h = {p["name"]: float(p["value"]) for p in parent["spec"]["parameters"]}
        grandparent = next(s for n, s in cluster.starts if n == seg["parent"])
        assert start == sim.toy(grandparent, h, 4)


def test_pbt_on_the_toy_problem_beats_its_first_generation_trained_on_unchanged():
    spec = sim.spec(population=4, generations=10)
    cluster = sim.PopulationCluster(spec).run()
    best = max(t["status"]["objectiveValue"] for t in cluster.trials.values())
    fixed = max(
        sim.q(
            sim.toy(
                sim.START, {k: float(v) for k, v in pbt.initial(spec.parameters, pbt.schedule(spec, ""), m).items()}, 40
            )
        )
        for m in range(4)
    )
    assert best > fixed and best > 1.19, (best, fixed)


def test_an_oom_killed_segment_is_retried_from_its_own_start_not_from_what_it_wrote():
    spec = sim.spec(population=3, generations=3)
    clean = sim.PopulationCluster(spec).run()
    cluster = sim.PopulationCluster(spec, oom=frozenset({("g001-m002", 1), ("g002-m000", 1)})).run()
    retried = {n: s for n, s in cluster.starts if n.endswith("-a2")}
    assert set(retried) == {"exp-g001-m002-a2", "exp-g002-m000-a2"}
    for name, start in retried.items():
        first = next(s for n, s in cluster.starts if n == name.removesuffix("-a2"))
        assert start == first  # the same starting checkpoint, not the half-trained one
    # The retries ran what the segments would have run: the same results, and so the same lineage.
    final = {n.removesuffix("-a2"): (v[0], v[1], v[4]) for n, v in cluster.lineage().items() if v[3] == "Succeeded"}
    assert final == {n: (v[0], v[1], v[4]) for n, v in clean.lineage().items()}
    assert len(cluster.trials) == 9 + 2 and cluster.status["trialsRetried"] == 2


def test_an_operator_killed_after_any_write_makes_exactly_the_same_segments():
    spec = sim.spec(population=3, generations=3)
    oom = frozenset({("g001-m001", 1)})
    clean = sim.PopulationCluster(spec, oom=oom)
    clean.kill_at = 10**9  # one write at a time, never killed: counts the writes
    clean.run()
    expected, writes = clean.lineage(), clean.writes
    assert len(expected) == 10
    for k in range(writes):
        cluster = sim.PopulationCluster(spec, oom=oom)
        cluster.kill_at = k
        cluster.run()
        assert cluster.kills == 1, k
        assert cluster.lineage() == expected, f"killed after write {k}"
        assert cluster.status["phase"] == "Succeeded" and cluster.status["configurations"] == 9


def test_the_example_decides_in_memory_what_it_decided_on_the_real_node():
    """examples/pbt.yaml's population, planned in memory: the lineage and results of its run on the
    real node (docs/pbt.md), segment for segment."""
    import yaml

    body = yaml.safe_load((Path(__file__).resolve().parents[2] / "examples" / "pbt.yaml").read_text())
    spec = body["spec"]
    spec["metricsCollector"] = {"source": "Auto"}  # the simulated pods report in their termination message
    cluster = sim.PopulationCluster(r.ExperimentSpec.model_validate(spec), oom=frozenset({("g002-m001", 1)})).run()
    seen = {
        n.removeprefix("exp-"): (
            t["spec"]["segment"].get("parent", "").removeprefix("exp-"),
            t["status"].get("objectiveValue"),
        )
        for n, t in cluster.trials.items()
    }
    on_the_node = {
        "g001-m001": ("g000-m000", 0.776149),
        "g002-m001": ("g001-m001", None),  # OOMKilled
        "g002-m001-a2": ("g001-m001", 0.990762),
        "g002-m002": ("g001-m001", 0.959493),
        "g003-m001": ("g002-m001-a2", 1.095616),
        "g003-m003": ("g002-m001-a2", 1.057057),
        "g004-m000": ("g003-m001", 1.13944),
        "g004-m001": ("g003-m001", 1.147417),
    }
    for name, (parent, value) in on_the_node.items():
        assert seen[name][0] == parent, name
        assert seen[name][1] == (None if value is None else pytest.approx(value, abs=1e-6)), name
    assert len(seen) == 21
