"""Population-based training (algorithm pbt): which segments exist, and when the next generation's
are made.

A member trains in segments, one Trial each (`{experiment}-g{generation}-m{member}`, its retries
`...-a2`), whose spec.segment says the member, the generation and the parent segment it starts
from. The segments of generation g + 1 are decided once every segment of generation g has ended for
good (succeeded, or failed with no retry left): search/population.py ranks the members, and each
one's step (go on from its own checkpoint, or exploit a better member's and explore) becomes a Trial
whose spec records it. That decision reads only the Trials of generation g, so the round that makes
the next generation, or any round after an operator killed half-way through making it, decides the
same: a missing segment is made with the same name and content, an existing one is left as it is,
and the population ends with exactly populationSize x generations segments.

A segment is a configuration in every other rule (its configuration label is its key, `g001-m002`):
retries, maxFailedTrialCount, parallelTrialCount, suspension. Its claim is its own
(workloads/population.py copies the parent's checkpoint into it); a segment whose parent's claim is
gone before the segment could mount it fails as CheckpointLost (not retried: the data is gone), and
at the next generation its member exploits a better member, as every member without a result does.

Steps over one RoundState: experiment.advance() calls launch_population() instead of launch.launch()
for a pbt experiment, experiment.retention() calls retention() instead of the per-configuration rule,
and refusals.validate_spec() adds validate()'s findings.
"""

from __future__ import annotations

from hpo_operator.api.algorithms import SettingsError
from hpo_operator.api.population import PBT, Segment
from hpo_operator.api.spec import ExperimentSpec
from hpo_operator.api.vocabulary import TERMINAL_PHASES, CheckpointRetention, FailureClass, LaunchReason, TrialPhase
from hpo_operator.search import population as search
from hpo_operator.workloads import checkpoint
from hpo_operator.workloads.population import key, parent_claim

from .launch import launch
from .state import RoundState, TrialView

# The reason of a segment whose parent's checkpoint is gone (also the copy step's, when it finds the
# parent's data not whole): the member cannot start from it, now or by a retry.
CHECKPOINT_LOST = "CheckpointLost"
# The experiment's reason when a whole generation failed: no checkpoint is left to go on from.
POPULATION_LOST = "PopulationLost"


def is_pbt(spec: ExperimentSpec) -> bool:
    return spec.algorithm.name == PBT


def validate(spec: ExperimentSpec) -> list[str]:
    """What the CRD's rules cannot check of a pbt experiment, as sentences for InvalidSpec."""
    if not is_pbt(spec):
        return []
    errors = []
    try:
        search.schedule(spec, "")
    except SettingsError as e:
        errors.append(str(e))
    job = spec.trial_template.job
    if job is not None:
        job_spec = job.get("spec") or {}
        if any(int(job_spec.get(k) or 1) != 1 for k in ("parallelism", "completions")):
            errors.append(
                "pbt runs a segment as one pod: a Job trial's parallelism and completions must be 1 "
                "(the checkpoint copy step fills one claim before one program starts)"
            )
    return errors


def segment_name(experiment: str, generation: int, member: int) -> str:
    return f"{experiment}-{key(generation, member)}"


def segments(state: RoundState) -> dict[str, list[TrialView]]:
    """The experiment's segments by key (their configuration label), each with its attempts."""
    return {k: ts for k, ts in state.groups().items() if ts[0].segment is not None}


def settled(state: RoundState, k: str, trials: list[TrialView]) -> bool:
    """A segment that has ended for good: it succeeded, or it failed with no retry left."""
    return state.succeeded(trials) or k in state.failed_keys


def result(state: RoundState, trials: list[TrialView]) -> tuple[TrialView, float] | None:
    """The segment's succeeded attempt and its objective, if it has one."""
    for t in trials:
        value = state.current(t).objective_value
        if state.phase(t) == TrialPhase.succeeded and value is not None:
            return t, value
    return None


def launch_population(state: RoundState) -> str | None:
    """Makes the segments the population needs now (every generation whose predecessor has ended,
    up to the current one), fails those whose parent's checkpoint is gone, and starts what
    parallelTrialCount allows. Returns why the population cannot go on, or None."""
    plan = search.schedule(state.spec, state.exp.uid)
    found = segments(state)
    lost = None
    for generation in range(plan.generations):
        keys = [key(generation, m) for m in range(plan.population)]
        if any(k not in found for k in keys):
            lost = make_generation(state, plan, generation, found)
            if lost:
                break
        if not all(settled(state, k, found[k]) for k in keys):
            break
    fail_lost_parents(state)
    launch(state, suggestions=False)
    return lost


def make_generation(
    state: RoundState, plan: search.Schedule, generation: int, found: dict[str, list[TrialView]]
) -> str | None:
    """Creates the generation's missing segments (in `found` too); the reason when it cannot be made."""
    spec = state.spec
    parents: dict[int, str] = {}
    if generation == 0:
        steps = [search.Step(m, m, False, search.initial(spec.parameters, plan, m)) for m in range(plan.population)]
    else:
        results: dict[int, float | None] = {}
        values: dict[int, dict[str, str]] = {}
        for m in range(plan.population):
            trials = found[key(generation - 1, m)]
            values[m] = trials[0].values
            done = result(state, trials)
            results[m] = None if done is None else done[1]
            if done is not None:
                parents[m] = done[0].name
        decided = search.next_generation(spec.parameters, plan, generation, results, values, str(spec.objective.type))
        if decided is None:
            return (
                f"every member's segment of generation {generation - 1} failed: no checkpoint is left "
                "for the population to go on from"
            )
        steps = decided
    for step in steps:
        k = key(generation, step.member)
        if k in found:
            continue  # made by an earlier round (cut short): its Trial holds what was decided
        name = segment_name(state.exp.name, generation, step.member)
        if name in state.views:
            # The segment's Trial exists but holds no spec.segment: the cluster's Trial CRD drops it (a
            # version before pbt). Its decisions cannot be read back, so none can be made on them.
            return (
                f"trial {name} exists without its spec.segment: the Trial CRD in the cluster does not keep "
                "it (apply this version's CRDs), and the population's decisions cannot be read back"
            )
        segment: dict[str, object] = {"member": step.member, "generation": generation}
        if generation > 0:
            segment.update(parent=parents[step.parent_member], parentMember=step.parent_member)
            if step.exploited:
                segment["exploited"] = True
        found[k] = [state.new_trial(name, step.values, 1, LaunchReason.suggestion, name, config=k, segment=segment)]
    return None


def fail_lost_parents(state: RoundState) -> None:
    """A segment that has not mounted its parent's claim yet, while that claim is gone (deleted, or
    being deleted: the kubelet mounts neither), fails as CheckpointLost rather than wait for
    startupTimeoutSeconds: no retry could copy it."""
    if state.volumes is None:
        return  # the claims are not known (yet): nothing is judged missing
    for t in state.active():
        segment = t.segment
        if segment is None or not segment.get("parent"):
            continue
        if state.has_pod.get(t.name) and state.workload_mounted(t.name):
            continue
        claim = parent_claim(state.exp.name, Segment.model_validate(segment))
        if claim is None or claim in state.volumes:
            continue
        state.stop_workload(t)
        state.set_status(
            t,
            phase=TrialPhase.failed,
            reason=CHECKPOINT_LOST,
            failure_class=FailureClass.startup,
            message=(
                f"the checkpoint of its parent segment {segment['parent']} (claim {claim}) is gone: the "
                "segment cannot start from it, and its member exploits a better member at the next generation"
            ),
        )


def retention(state: RoundState) -> None:
    """Segments' claims that checkpoint.retention removes now: a generation's once the next
    generation has ended (no segment of it may need to copy them again); the last generation's
    under Delete only (under DeleteOnSuccess they hold the trained population). DeleteOnSuccess
    keeps a failed segment's claim for inspection, as for other experiments."""
    ckpt = state.checkpoint
    if ckpt is None or state.volumes is None or ckpt.retention == CheckpointRetention.keep:
        return
    plan = search.schedule(state.spec, state.exp.uid)
    found = segments(state)

    def ended(generation: int) -> bool:
        keys = [key(generation, m) for m in range(plan.population)]
        return all(k in found and settled(state, k, found[k]) for k in keys)

    doomed = []
    for generation in range(plan.generations):
        last = generation == plan.generations - 1
        if last and ckpt.retention != CheckpointRetention.delete:
            continue
        if not (ended(generation) if last else ended(generation + 1)):
            continue
        for m in range(plan.population):
            k = key(generation, m)
            trials = found.get(k, [])
            if ckpt.retention == CheckpointRetention.delete_on_success and not state.succeeded(trials):
                continue
            name = checkpoint.claim_name(state.exp.name, k)
            if name in state.volumes and all(state.phase(t) in TERMINAL_PHASES for t in trials):
                doomed.append(name)
    state.plan.delete_volumes = sorted(doomed)
