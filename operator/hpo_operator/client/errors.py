"""Errors the client library raises: each carries a sentence meant for a person."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any, TypeVar

from pydantic import ValidationError

from hpo_operator.api.base import Model

if TYPE_CHECKING:  # only annotations: these pure modules load without the kubernetes client
    from kubernetes.client import ApiException


class HpoError(Exception):
    """Something the user can fix or should know; `str(e)` is the whole message."""


class InvalidInput(HpoError):
    """Bad input given to the library (a time, a JSON document, a sort key, ...)."""


class NotFound(HpoError):
    """An experiment or trial that does not exist."""


class PermissionDenied(HpoError):
    """The API server refused the request (HTTP 403)."""


class Conflict(HpoError):
    """An object that already exists (HTTP 409)."""


class Timeout(HpoError):
    """Waited for something that did not happen in time."""


def api_message(e: ApiException) -> str:
    """The API server's own explanation, from its Status body when it sent one."""
    body = getattr(e, "body", None)
    if body:
        try:
            status = json.loads(body)
        except (TypeError, ValueError):
            status = None
        if isinstance(status, dict) and status.get("message"):
            return str(status["message"])
        if isinstance(body, bytes):
            body = body.decode(errors="replace")
        if isinstance(body, str) and body.strip():
            return body.strip()[:500]
    return f"{e.status} {e.reason}".strip()


def translate(
    e: ApiException, *, kind: str | None = None, name: str | None = None, namespace: str | None = None
) -> HpoError:
    """An HpoError for an ApiException; with kind and name, a 404 names the missing object."""
    if e.status == 404 and kind and name:
        where = f" in namespace {namespace}" if namespace else ""
        return NotFound(f"{kind} {name} not found{where}")
    if e.status == 403:
        return PermissionDenied(f"permission denied: {api_message(e)}")
    if e.status == 409:
        return Conflict(api_message(e))
    if e.status == 422 or e.status == 400:
        return InvalidInput(f"the API server refused it: {api_message(e)}")
    if e.status == 401:
        return PermissionDenied(f"unauthorized (check your credentials): {api_message(e)}")
    return HpoError(f"the API server answered {e.status} {e.reason or ''}: {api_message(e)}".replace("  ", " "))


M = TypeVar("M", bound=Model)


def validated(model: type[M], what: str, **data: Any) -> M:
    """The model of `data`, or InvalidInput naming each field that is wrong."""
    try:
        return model.model_validate(data)
    except ValidationError as e:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or 'value'}: {err['msg']}" for err in e.errors(include_url=False)
        )
        raise InvalidInput(f"{what}: {problems}") from None
