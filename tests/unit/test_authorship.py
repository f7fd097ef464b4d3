"""Who wrote an Experiment or a Trial (core/authorship.py): the admission webhook's patches, the
signatures the operator checks, and whose rights a trial's workload is created with."""

from __future__ import annotations

import base64
import json

import pytest

from hpo_operator.api.vocabulary import (
    A_AUTHOR,
    A_AUTHOR_SIGNATURE,
    A_CREATOR,
    A_RESTART,
    A_RESTART_AUTHOR,
    A_RESTART_AUTHOR_SIGNATURE,
)
from hpo_operator.core.authorship import (
    RESTART_AUTHOR,
    Author,
    Unverified,
    admit,
    inherited,
    read_author,
    review_response,
    sign,
    signed,
    trial_author,
)

KEY = b"k" * 32
OPERATOR = "system:serviceaccount:hpo-system:hpo-operator"
ALICE = {"username": "alice", "uid": "u-1", "groups": ["team-a", "system:authenticated"], "extra": {"scopes": ["x"]}}
MALLORY = {"username": "mallory", "groups": ["system:authenticated"]}


def apply_patch(obj: dict, ops: list[dict]) -> dict:
    """The JSON Patch operations admit() gives, applied to an object's annotations (the only paths
    it writes)."""
    obj = json.loads(json.dumps(obj))
    meta = obj.setdefault("metadata", {})
    for op in ops:
        if op["path"] == "/metadata/annotations":
            assert op["op"] == "add"
            meta["annotations"] = dict(op["value"])
            continue
        prefix = "/metadata/annotations/"
        assert op["path"].startswith(prefix)
        name = op["path"][len(prefix) :].replace("~1", "/").replace("~0", "~")
        if op["op"] == "remove":
            del meta["annotations"][name]
        else:
            assert (name in meta["annotations"]) == (op["op"] == "replace")
            meta["annotations"][name] = op["value"]
    return obj


def request(operation: str, user: dict, annotations: dict | None, old: dict | None = None, namespace: str = "team-a"):
    meta: dict = {"name": "exp", "namespace": namespace}
    if annotations is not None:
        meta["annotations"] = annotations
    req = {"uid": "r1", "operation": operation, "namespace": namespace, "userInfo": user, "object": {"metadata": meta}}
    if old is not None:
        req["oldObject"] = {"metadata": {"name": "exp", "namespace": namespace, "annotations": old}}
    return req


def admitted(req: dict) -> dict:
    return apply_patch(req["object"], admit(req, KEY, OPERATOR))["metadata"].get("annotations") or {}


def test_a_create_records_the_requester_as_the_api_server_names_it_signed():
    got = admitted(request("CREATE", ALICE, None))
    author = read_author(got, "team-a", KEY)
    assert author == Author.from_user_info(ALICE)
    assert got[A_CREATOR] == "alice"
    assert author.user_info() == {
        "user": "alice",
        "uid": "u-1",
        "groups": ["team-a", "system:authenticated"],
        "extra": {"scopes": ["x"]},
    }


def test_a_client_cannot_claim_another_author_at_create():
    forged = {
        **signed(Author.from_user_info(ALICE), "team-a", KEY),  # even a validly signed copy of alice's
        A_CREATOR: "alice",
        "keep/me": "yes",
    }
    got = admitted(request("CREATE", MALLORY, forged))
    assert read_author(got, "team-a", KEY).username == "mallory"
    assert got[A_CREATOR] == "mallory"
    assert got["keep/me"] == "yes"  # other annotations are the client's own


def test_an_update_puts_the_author_annotations_back_whatever_the_client_sent():
    original = admitted(request("CREATE", ALICE, {"note": "1"}))
    for changed in (
        {**original, A_AUTHOR: json.dumps({"username": "mallory"}), A_CREATOR: "mallory"},
        {k: v for k, v in original.items() if k not in (A_AUTHOR, A_AUTHOR_SIGNATURE, A_CREATOR)},
        {"note": "2"},
    ):
        got = admitted(request("UPDATE", MALLORY, changed, old=original))
        assert {k: got.get(k) for k in (A_AUTHOR, A_AUTHOR_SIGNATURE, A_CREATOR)} == {
            k: original[k] for k in (A_AUTHOR, A_AUTHOR_SIGNATURE, A_CREATOR)
        }


def test_an_update_cannot_add_an_author_to_an_object_made_without_one():
    got = admitted(
        request("UPDATE", MALLORY, {"x": "1", **signed(Author("alice"), "team-a", KEY), A_CREATOR: "a"}, old={"x": "1"})
    )
    assert got == {"x": "1"}


def test_a_new_restart_request_records_its_requester_and_an_unchanged_one_keeps_it():
    trial = admitted(request("CREATE", ALICE, None))
    asked = admitted(request("UPDATE", MALLORY, {**trial, A_RESTART: "2026-12-07T10:00:00Z"}, old=trial))
    assert read_author(asked, "team-a", KEY, RESTART_AUTHOR).username == "mallory"
    assert read_author(asked, "team-a", KEY).username == "alice"
    # Alice edits a label meanwhile: the request is still mallory's.
    edited = admitted(request("UPDATE", ALICE, {**asked, "other": "x"}, old=asked))
    assert read_author(edited, "team-a", KEY, RESTART_AUTHOR).username == "mallory"
    # Alice asks again, with a new value: now hers.
    again = admitted(request("UPDATE", ALICE, {**edited, A_RESTART: "2026-12-07T11:00:00Z"}, old=edited))
    assert read_author(again, "team-a", KEY, RESTART_AUTHOR).username == "alice"
    # A request a user withdraws leaves no requester behind.
    withdrawn = {k: v for k, v in again.items() if k != A_RESTART}
    gone = admitted(request("UPDATE", ALICE, withdrawn, old=again))
    assert A_RESTART_AUTHOR not in gone and A_RESTART_AUTHOR_SIGNATURE not in gone


def test_the_operators_own_writes_are_left_as_they_are():
    mine = {A_AUTHOR: "anything", A_CREATOR: "whoever"}
    for op in ("CREATE", "UPDATE"):
        assert admit(request(op, {"username": OPERATOR}, mine, old={}), KEY, OPERATOR) == []


def test_a_signature_holds_only_for_its_namespace_and_value():
    good = signed(Author("alice"), "team-a", KEY)
    assert read_author(good, "team-a", KEY) == Author("alice")
    with pytest.raises(Unverified):
        read_author(good, "team-b", KEY)  # copied into another namespace
    with pytest.raises(Unverified):
        read_author({**good, A_AUTHOR: good[A_AUTHOR].replace("alice", "admin")}, "team-a", KEY)
    with pytest.raises(Unverified):
        read_author({A_AUTHOR: good[A_AUTHOR]}, "team-a", KEY)  # written without the webhook
    with pytest.raises(Unverified):
        read_author(good, "team-a", b"another key")
    assert read_author({}, "team-a", KEY) is None


def test_a_trials_own_author_comes_before_its_experiments():
    experiment = signed(Author("alice"), "ns", KEY)
    assert trial_author({}, experiment, "ns", KEY).username == "alice"
    assert trial_author(signed(Author("bob"), "ns", KEY), experiment, "ns", KEY).username == "bob"
    with pytest.raises(Unverified, match="no author recorded"):
        trial_author({}, {}, "ns", KEY)
    with pytest.raises(Unverified):
        trial_author({A_AUTHOR: '{"username":"admin"}'}, experiment, "ns", KEY)  # forged on the trial


def test_a_users_trial_or_restart_without_a_recorded_requester_never_falls_back_to_the_experiments_author():
    experiment = signed(Author("alice"), "ns", KEY)
    with pytest.raises(Unverified, match="no requester"):
        trial_author({}, experiment, "ns", KEY, own=True)
    requested = inherited(signed(Author("bob"), "ns", KEY, RESTART_AUTHOR), RESTART_AUTHOR)
    assert trial_author(requested, experiment, "ns", KEY, own=True).username == "bob"
    assert inherited({}) == {}  # an ordinary retry: the experiment's author applies


def test_the_review_answers_with_a_base64_json_patch_and_the_request_uid():
    review = {"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": request("CREATE", ALICE, None)}
    answer = review_response(review, KEY, OPERATOR)["response"]
    assert (answer["uid"], answer["allowed"], answer["patchType"]) == ("r1", True, "JSONPatch")
    ops = json.loads(base64.b64decode(answer["patch"]))
    assert ops[0]["path"] == "/metadata/annotations" and A_AUTHOR in ops[0]["value"]
    assert review_response({"request": {}}, KEY, OPERATOR)["response"]["allowed"] is False


def test_annotation_names_are_escaped_as_json_pointers():
    got = admit(request("CREATE", ALICE, {"a~b": "1"}), KEY, OPERATOR)
    assert {op["path"] for op in got} >= {"/metadata/annotations/hpo.dev~1author"}
    assert sign(KEY, "ns", "v") != sign(KEY, "ns2", "v")
