"""Who wrote an Experiment or a Trial, and who asked for a restart: as the API server told the
operator's admission webhook, and never as a client claims.

Admission is the only place where the API server says who makes a request (request.userInfo). The
webhook (controller/webhook.py serves it; the decisions are here) writes that identity into the
object's annotations on every request but the operator's own, each with an HMAC signature under a
key only the operator holds:

- on CREATE: hpo.dev/author (and hpo.dev/creator, the name shown by `kubectl hpo list`);
- on UPDATE: the author annotations go back to what the object had (nobody else's name can be put
  there); a changed hpo.dev/restart request gets hpo.dev/restart-author, the requester's identity.

The signature is what lets the operator tell the webhook's words from a client's: an object written
while no webhook ran (before the chart enabled it, or with the webhook removed) can carry any
annotation, but not a valid signature. It binds the identity to the namespace, so a signed value
copied into another namespace is worth nothing; within a namespace every write but the operator's
goes through the webhook, which overwrites whatever the client sent.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from hpo_operator.api.vocabulary import (
    A_AUTHOR,
    A_AUTHOR_SIGNATURE,
    A_CREATOR,
    A_RESTART,
    A_RESTART_AUTHOR,
    A_RESTART_AUTHOR_SIGNATURE,
)

# The annotations only the webhook and the operator may write, in (identity, signature) pairs.
AUTHOR = (A_AUTHOR, A_AUTHOR_SIGNATURE)
RESTART_AUTHOR = (A_RESTART_AUTHOR, A_RESTART_AUTHOR_SIGNATURE)
GUARDED = (A_AUTHOR, A_AUTHOR_SIGNATURE, A_CREATOR, A_RESTART_AUTHOR, A_RESTART_AUTHOR_SIGNATURE)


@dataclass(frozen=True)
class Author:
    """An identity as the API server's authenticator gave it (authentication.k8s.io UserInfo): what
    a SubjectAccessReview needs to ask about that user's rights."""

    username: str
    uid: str = ""
    groups: tuple[str, ...] = ()
    extra: Mapping[str, tuple[str, ...]] = field(default_factory=dict)

    @classmethod
    def from_user_info(cls, info: Mapping[str, Any]) -> Author:
        extra = info.get("extra") or {}
        return cls(
            username=str(info.get("username") or ""),
            uid=str(info.get("uid") or ""),
            groups=tuple(str(g) for g in info.get("groups") or ()),
            extra={str(k): tuple(str(v) for v in (vs or ())) for k, vs in sorted(extra.items())},
        )

    def to_json(self) -> str:
        """The annotation's value: canonical (sorted keys, no spaces), so that it signs one way."""
        body: dict[str, Any] = {"username": self.username}
        if self.uid:
            body["uid"] = self.uid
        if self.groups:
            body["groups"] = list(self.groups)
        if self.extra:
            body["extra"] = {k: list(v) for k, v in self.extra.items()}
        return json.dumps(body, sort_keys=True, separators=(",", ":"))

    def user_info(self) -> dict[str, Any]:
        """The identity as a SubjectAccessReview's spec names it."""
        spec: dict[str, Any] = {"user": self.username, "groups": list(self.groups)}
        if self.uid:
            spec["uid"] = self.uid
        if self.extra:
            spec["extra"] = {k: list(v) for k, v in self.extra.items()}
        return spec


def sign(key: bytes, namespace: str, value: str) -> str:
    message = f"{namespace}\n{value}".encode()
    return hmac.new(key, message, hashlib.sha256).hexdigest()


class Unverified(Exception):
    """An author annotation without a valid signature: written by a client, not the webhook."""


def read_author(
    annotations: Mapping[str, str], namespace: str, key: bytes, pair: tuple[str, str] = AUTHOR
) -> Author | None:
    """The signed identity in `pair` of the annotations; None when there is none at all;
    Unverified when there is one whose signature does not match."""
    value, signature = annotations.get(pair[0]), annotations.get(pair[1])
    if value is None and signature is None:
        return None
    if not value or not signature or not hmac.compare_digest(sign(key, namespace, value), signature):
        raise Unverified(f"annotation {pair[0]} was not written by the operator's admission webhook")
    try:
        info = json.loads(value)
    except ValueError as e:
        raise Unverified(f"annotation {pair[0]} is not JSON") from e
    if not isinstance(info, dict) or not info.get("username"):
        raise Unverified(f"annotation {pair[0]} names no user")
    return Author.from_user_info(info)


def signed(author: Author, namespace: str, key: bytes, pair: tuple[str, str] = AUTHOR) -> dict[str, str]:
    """The annotations that record `author` in `pair`."""
    value = author.to_json()
    return {pair[0]: value, pair[1]: sign(key, namespace, value)}


# --- the webhook's decision ------------------------------------------------------------------


def _escape(name: str) -> str:
    """An annotation key as a JSON Pointer token (RFC 6901)."""
    return name.replace("~", "~0").replace("/", "~1")


def annotation_patch(old: Mapping[str, str] | None, new: Mapping[str, str]) -> list[dict[str, Any]]:
    """JSON Patch operations that turn an object's annotations `old` (None: it has no annotations
    field) into `new`."""
    if old is None:
        return [{"op": "add", "path": "/metadata/annotations", "value": dict(new)}] if new else []
    ops: list[dict[str, Any]] = []
    for name in old:
        if name not in new:
            ops.append({"op": "remove", "path": f"/metadata/annotations/{_escape(name)}"})
    for name, value in new.items():
        if old.get(name) != value:
            ops.append(
                {
                    "op": "replace" if name in old else "add",
                    "path": f"/metadata/annotations/{_escape(name)}",
                    "value": value,
                }
            )
    return ops


def admit(request: Mapping[str, Any], key: bytes, operator: str) -> list[dict[str, Any]]:
    """The JSON Patch the webhook answers an AdmissionReview's request with (Experiments and Trials,
    CREATE and UPDATE), by the rules in this module's docstring. The operator's own requests
    (username `operator`) are left as they are: it copies a requester's signed identity onto the
    Trials it makes for them."""
    user = Author.from_user_info(request.get("userInfo") or {})
    if not user.username or user.username == operator:
        return []
    obj = request.get("object") or {}
    meta = obj.get("metadata") or {}
    namespace = str(request.get("namespace") or meta.get("namespace") or "")
    given = meta.get("annotations")
    annotations = {k: v for k, v in (given or {}).items() if k not in GUARDED}
    operation = request.get("operation")
    if operation == "CREATE":
        annotations.update(signed(user, namespace, key))
        annotations[A_CREATOR] = user.username
    elif operation == "UPDATE":
        old = ((request.get("oldObject") or {}).get("metadata") or {}).get("annotations") or {}
        annotations.update({k: old[k] for k in GUARDED if k in old})
        request_value = annotations.get(A_RESTART)
        if request_value is not None and request_value != old.get(A_RESTART):
            # A new restart request (or a new value of one): its requester, not whoever asked before.
            annotations.update(signed(user, namespace, key, RESTART_AUTHOR))
        elif request_value is None:
            for name in RESTART_AUTHOR:
                annotations.pop(name, None)
    else:
        return []
    return annotation_patch(given, annotations)


def review_response(review: Mapping[str, Any], key: bytes, operator: str) -> dict[str, Any]:
    """The AdmissionReview (admission.k8s.io/v1) answering `review`: always allowed, with the
    patch when there is one. A review that is not one is answered as not allowed, saying why."""
    request = review.get("request")
    if not isinstance(request, dict) or not request.get("uid"):
        return {
            "apiVersion": "admission.k8s.io/v1",
            "kind": "AdmissionReview",
            "response": {"uid": "", "allowed": False, "status": {"code": 400, "message": "not an AdmissionReview"}},
        }
    response: dict[str, Any] = {"uid": request["uid"], "allowed": True}
    ops = admit(request, key, operator)
    if ops:
        response["patchType"] = "JSONPatch"
        response["patch"] = base64.b64encode(json.dumps(ops).encode()).decode()
    return {"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "response": response}


# --- whose rights a trial's workload is created with --------------------------------------------


def trial_author(
    trial: Mapping[str, str], experiment: Mapping[str, str], namespace: str, key: bytes, own: bool = False
) -> Author:
    """The author whose rights a trial's workload must not exceed, from the annotations of the
    Trial and of its Experiment: the Trial's own author where it has one (a Trial a user made, a
    restart's re-run, a retry of either), else the Experiment's. With `own` (a Trial a user made, a
    restart's re-run) only the Trial's own author counts: never the experiment's, whose author did
    not ask for it. Unverified when that record is missing or not the webhook's."""
    author = read_author(trial, namespace, key)
    if author is not None:
        return author
    if own:
        raise Unverified("the trial has no requester recorded by the operator's admission webhook")
    author = read_author(experiment, namespace, key)
    if author is None:
        raise Unverified(
            "the experiment has no author recorded by the operator's admission webhook (was it created "
            "before the webhook was installed? create it again)"
        )
    return author


def inherited(annotations: Mapping[str, str], pair: tuple[str, str] = AUTHOR) -> dict[str, str]:
    """The signed identity in `pair` of the annotations, as a re-run's own author annotations (none
    when there is none)."""
    value, signature = annotations.get(pair[0]), annotations.get(pair[1])
    if value is None:
        return {}
    return {A_AUTHOR: value, A_AUTHOR_SIGNATURE: signature or ""}
