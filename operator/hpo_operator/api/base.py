"""The base of the API's pydantic models and the helpers that spell Kubernetes' schema extensions.

The spec (spec.py, with parameters.py and template.py), the status (status.py) and the embedded
fragments of other APIs (external.py) build on this; hpo_operator.api.crd turns the models into
the CRDs' OpenAPI schemas.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict
from pydantic.alias_generators import to_camel


def cel(rule: str, message: str, **extra: Any) -> dict[str, Any]:
    return {"rule": rule, "message": message, **extra}


def schema_extra(**kw: Any) -> dict[str, Any]:
    """Kubernetes schema extensions, spelled with their x-kubernetes- prefix."""
    return {f"x-kubernetes-{k.replace('_', '-')}": v for k, v in kw.items()}


class Model(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="ignore", use_enum_values=True)

    def dump(self) -> dict[str, Any]:
        return self.model_dump(by_alias=True, exclude_none=True, mode="json")
