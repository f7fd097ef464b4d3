"""Checkpoint volumes per configuration (hpo_operator.workloads.checkpoint)."""

from __future__ import annotations

import pytest

from hpo_operator.api.status import Metric
from hpo_operator.api.template import Checkpoint
from hpo_operator.workloads.checkpoint import build_claim, claim_name, merged_history, mount, volumes_to_delete

CKPT = Checkpoint.model_validate(
    {"volumeClaimTemplate": {"size": "1Gi", "storageClassName": "local"}, "mountPath": "/ckpt"}
)
EXPERIMENT = {"apiVersion": "hpo.dev/v1alpha1", "metadata": {"name": "exp", "namespace": "ns", "uid": "e-1"}}


def test_one_claim_per_configuration_named_and_owned_deterministically():
    claim = build_claim(CKPT, EXPERIMENT, "c0ffee")
    assert claim["metadata"]["name"] == claim_name("exp", "c0ffee") == "exp-ckpt-c0ffee"
    assert claim["metadata"]["ownerReferences"][0] | {} == {
        "apiVersion": "hpo.dev/v1alpha1",
        "kind": "Experiment",
        "name": "exp",
        "uid": "e-1",
        "controller": True,
        "blockOwnerDeletion": True,
    }
    assert claim["metadata"]["labels"]["hpo.dev/config"] == "c0ffee"
    assert claim["spec"] == {
        "accessModes": ["ReadWriteOnce"],
        "resources": {"requests": {"storage": "1Gi"}},
        "storageClassName": "local",
    }
    assert build_claim(CKPT, EXPERIMENT, "c0ffee") == claim
    long = claim_name("e" * 250, "c0ffee")
    assert len(long) <= 253 and long.endswith("-ckpt-c0ffee") and long != claim_name("e" * 249 + "f", "c0ffee")


@pytest.mark.parametrize("resume", [False, True])
def test_the_primary_container_gets_the_volume_and_the_environment(resume):
    spec = {
        "containers": [{"name": "sidecar"}, {"name": "train", "env": [{"name": "A", "value": "1"}]}],
        "volumes": [{"name": "data", "emptyDir": {}}],
    }
    mount(spec, CKPT, "exp-ckpt-c0ffee", "train", resume)
    assert spec["volumes"][-1] == {"name": "hpo-checkpoint", "persistentVolumeClaim": {"claimName": "exp-ckpt-c0ffee"}}
    assert "volumeMounts" not in spec["containers"][0]
    train = spec["containers"][1]
    assert train["volumeMounts"] == [{"name": "hpo-checkpoint", "mountPath": "/ckpt"}]
    env = {e["name"]: e["value"] for e in train["env"]}
    assert env == {"A": "1", "HPO_CHECKPOINT_DIR": "/ckpt", **({"HPO_RESUME": "1"} if resume else {})}
    mount(spec, CKPT, "exp-ckpt-c0ffee", "train", resume)  # idempotent
    assert len(spec["volumes"]) == 2 and len(train["volumeMounts"]) == 1


def h(name: str, *steps: int) -> list[Metric]:
    return [Metric(name=name, value=float(s), step=s) for s in steps]


def test_a_resumed_attempts_history_continues_the_earlier_one():
    # The first attempt reported epochs 1-3 and died during 4 after checkpointing 2; the retry
    # resumed at 3: epochs 1-2 of the first, then its own 3-6.
    earlier = h("loss", 1, 2, 3) + h("acc", 1, 2, 3)
    own = h("loss", 3, 4, 5, 6) + h("acc", 3, 4, 5, 6)
    merged = merged_history(earlier, own)
    assert sorted(m.step for m in merged if m.name == "loss") == [1, 2, 3, 4, 5, 6]
    assert [m for m in merged if m.name == "loss" and m.step == 3] == h("loss", 3)
    assert merged_history(h("loss", 1, 2), []) == h("loss", 1, 2)
    assert merged_history([], own) == own


def test_retention_removes_claims_of_finished_configurations_only():
    configs = {
        "ok": (True, True, False),
        "lost": (True, False, True),
        "retrying": (False, False, False),
        "gone": (True, True, False),
        "waiting": (True, False, False),
    }
    existing = {claim_name("exp", c) for c in ("ok", "lost", "retrying", "waiting")}
    assert volumes_to_delete("DeleteOnSuccess", configs, existing, "exp") == ["exp-ckpt-ok"]
    assert volumes_to_delete("Delete", configs, existing, "exp") == ["exp-ckpt-lost", "exp-ckpt-ok"]
    assert volumes_to_delete("Keep", configs, existing, "exp") == []
