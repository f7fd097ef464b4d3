"""The pure parts of the client: parsing user input, filtering, sorting and paging.

Nothing here calls the API server, so all of it is unit-tested without a cluster.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, TypeVar

from hpo_operator.api.vocabulary import EXPERIMENT_PHASES
from hpo_operator.core import times

from .errors import InvalidInput

T = TypeVar("T")


TIME_FORMATS_HELP = "yyyy-mm-dd or 'yyyy-mm-dd hh:mm:ss' (UTC)"

_DATE = re.compile(r"^(\d{4})-(\d{2})-(\d{2})$")
_DATETIME = re.compile(r"^(\d{4})-(\d{2})-(\d{2})[ T](\d{2}):(\d{2}):(\d{2})Z?$")


# --- times -----------------------------------------------------------------------------------


def parse_time(text: str, *, end_of_day: bool = False) -> datetime:
    """A time given as `yyyy-mm-dd` or `yyyy-mm-dd hh:mm:ss`, in UTC.

    A bare date means the start of that day, or its last second with `end_of_day` (so that an
    upper bound of `2025-03-31` includes everything created on March 31).
    """
    raw = text
    text = (text or "").strip()
    try:
        m = _DATETIME.match(text)
        if m:
            return datetime(*(int(g) for g in m.groups()), tzinfo=UTC)  # type: ignore[misc]
        m = _DATE.match(text)
        if m:
            day = datetime(*(int(g) for g in m.groups()), tzinfo=UTC)  # type: ignore[misc]
            return day.replace(hour=23, minute=59, second=59) if end_of_day else day
    except ValueError as e:  # 2025-02-30, 25:00:00, ...
        raise InvalidInput(f"invalid time {raw!r}: {e}") from None
    raise InvalidInput(f"invalid time {raw!r}: use {TIME_FORMATS_HELP}")


@dataclass(frozen=True)
class TimeRange:
    start: datetime | None = None
    end: datetime | None = None

    def __post_init__(self) -> None:
        if self.start and self.end and self.start > self.end:
            raise InvalidInput(
                f"the time range is empty: {times.display(self.start)} is after {times.display(self.end)}"
            )

    @classmethod
    def parse(cls, start: str | None, end: str | None) -> TimeRange:
        return cls(parse_time(start) if start else None, parse_time(end, end_of_day=True) if end else None)

    def contains(self, value: datetime | None) -> bool:
        if self.start is None and self.end is None:
            return True
        if value is None:
            return False
        return (self.start is None or value >= self.start) and (self.end is None or value <= self.end)


# --- filters -----------------------------------------------------------------------------------


def _split(text: str | Iterable[str] | None) -> list[str]:
    if text is None:
        return []
    parts = [text] if isinstance(text, str) else list(text)
    return [p.strip() for part in parts for p in part.split(",") if p.strip()]


def parse_phases(text: str | Iterable[str] | None, allowed: Sequence[str] = EXPERIMENT_PHASES) -> frozenset[str]:
    """Phases from `Running,succeeded`: matched without regard to case, unknown ones refused."""
    by_lower = {p.lower(): p for p in allowed}
    result = set()
    for part in _split(text):
        phase = by_lower.get(part.lower().replace("_", "").replace("-", ""))
        if phase is None:
            raise InvalidInput(f"unknown status {part!r}: use one of {', '.join(allowed)}")
        result.add(phase)
    return frozenset(result)


@dataclass(frozen=True)
class ExperimentFilter:
    """ListHpoExperiments' filters that the API server cannot apply (labels are sent to it)."""

    name: str | None = None  # a keyword: part of the name, any case
    creator: str | None = None  # exactly the hpo.dev/creator annotation
    phases: frozenset[str] = frozenset()
    created: TimeRange = field(default_factory=TimeRange)

    def matches(self, *, name: str, creator: str | None, phase: str, created: datetime | None) -> bool:
        if self.name and self.name.lower() not in name.lower():
            return False
        if self.creator is not None and self.creator != (creator or ""):
            return False
        if self.phases and phase not in self.phases:
            return False
        return self.created.contains(created)

    @property
    def empty(self) -> bool:
        return not (self.name or self.creator is not None or self.phases or self.created.start or self.created.end)


_LABEL_KEY = re.compile(r"^([a-z0-9]([-a-z0-9.]*[a-z0-9])?/)?[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$")
_LABEL_VALUE = re.compile(r"^([A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?)?$")


def parse_tag(text: str) -> tuple[str, str]:
    """A tag `key=value` (or PAI's `key:value`) as a label; a bare key matches any value."""
    text = text.strip()
    if "=" in text:
        key, value = text.split("=", 1)
    elif ":" in text and not text.startswith("http"):
        key, value = text.split(":", 1)
    else:
        key, value = text, ""
    key, value = key.strip(), value.strip()
    if not key or len(key.split("/")[-1]) > 63 or not _LABEL_KEY.match(key):
        raise InvalidInput(f"invalid tag {text!r}: the key must be a Kubernetes label key")
    if len(value) > 63 or not _LABEL_VALUE.match(value):
        raise InvalidInput(f"invalid tag {text!r}: the value must be a Kubernetes label value")
    return key, value


def build_selector(selector: str | None = None, tags: Iterable[str] = (), extra: Iterable[str] = ()) -> str | None:
    """One label selector from `-l`, `--tag k=v` options and fixed requirements."""
    parts = [s.strip() for s in [selector or "", *extra] if s and s.strip()]
    for tag in tags:
        key, value = parse_tag(tag)
        parts.append(f"{key}={value}" if value else key)
    return ",".join(parts) or None


# --- sorting -------------------------------------------------------------------------------------

SORT_FIELDS = {
    "created": "created",
    "creation": "created",
    "creationtime": "created",
    "createtime": "created",
    "gmtcreatetime": "created",
    "creationtimestamp": "created",
    "time": "created",
    "name": "name",
}


def sort_field(text: str) -> str:
    key = SORT_FIELDS.get(text.strip().lower().replace("_", "").replace("-", ""))
    if key is None:
        raise InvalidInput(f"cannot sort by {text!r}: use created (GmtCreateTime) or name")
    return key


def sort_direction(text: str | None, default: str = "asc") -> bool:
    """True for descending."""
    value = (text or default).strip().lower()
    if value not in ("asc", "desc"):
        raise InvalidInput(f"invalid order {text!r}: use asc or desc")
    return value == "desc"


def parse_order_by(text: str | None, default: str = "created asc,name asc") -> list[tuple[str, bool]]:
    """ListRuns' OrderBy: `GmtCreateTime DESC,Name ASC` or `created desc,name` -> [(field, desc)]."""
    result: list[tuple[str, bool]] = []
    for part in _split(text or default):
        words = part.split()
        if len(words) > 2:
            raise InvalidInput(f"invalid order {part!r}: use FIELD [asc|desc], separated by commas")
        key = sort_field(words[0])
        if any(k == key for k, _ in result):
            raise InvalidInput(f"invalid order {text!r}: {key} is given twice")
        result.append((key, sort_direction(words[1] if len(words) > 1 else None)))
    if not any(k == "name" for k, _ in result):
        result.append(("name", False))  # a stable order for ties
    return result


def sort_items(items: Iterable[T], keys: Sequence[tuple[str, bool]], getters: dict[str, Callable[[T], Any]]) -> list[T]:
    """Sorts by several keys, each ascending or descending (stable sorts, last key first)."""
    result = list(items)
    for key, desc in reversed(list(keys)):
        getter = getters[key]
        # None sorts first ascending; a tuple keeps None and values comparable.
        result.sort(
            key=lambda item: (
                (getter(item) is not None, getter(item) or 0) if key == "created" else (getter(item) or "")
            ),
            reverse=desc,
        )
    return result


# --- paging ----------------------------------------------------------------------------------------


@dataclass
class Page:
    items: list
    total: int
    page: int | None = None  # page-number paging
    page_size: int | None = None
    next_token: str | None = None  # token paging; None or "0" when there is nothing more

    @property
    def pages(self) -> int | None:
        if not self.page_size:
            return None
        return max(1, -(-self.total // self.page_size))


def paginate(items: Sequence[T], page: int, size: int) -> Page:
    """Page `page` (from 1) of `size` items; a page past the end is empty, not an error."""
    if page < 1:
        raise InvalidInput(f"invalid page number {page}: pages start at 1")
    if size < 1:
        raise InvalidInput(f"invalid page size {size}: it must be at least 1")
    start = (page - 1) * size
    return Page(list(items[start : start + size]), total=len(items), page=page, page_size=size)


def parse_page_token(token: str | int | None) -> int:
    if token in (None, ""):
        return 0
    try:
        offset = int(str(token))
    except ValueError:
        raise InvalidInput(f"invalid page token {token!r}: use the token a previous page printed") from None
    if offset < 0:
        raise InvalidInput(f"invalid page token {token!r}: use the token a previous page printed")
    return offset


def token_page(items: Sequence[T], token: str | int | None, max_results: int) -> Page:
    """ListRuns' paging: the token is where the page starts (0 first); the next token is where the
    next page starts, or "0" when this page is the last (as PAI's NextPageToken)."""
    if max_results < 1:
        raise InvalidInput(f"invalid page size {max_results}: it must be at least 1")
    start = parse_page_token(token)
    chunk = list(items[start : start + max_results])
    end = start + len(chunk)
    return Page(chunk, total=len(items), page_size=max_results, next_token=str(end) if end < len(items) else "0")


# --- parameters ----------------------------------------------------------------------------------

_PAI_PLACEHOLDER = re.compile(r"^\$\{(.+)\}$")


def parameter_text(name: str, value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        if isinstance(value, float) and value != value:  # NaN
            raise InvalidInput(f"parameter {name}: NaN is not a value")
        return json.dumps(value)
    if isinstance(value, str):
        return value
    raise InvalidInput(f"parameter {name}: give a string or a number, not {json.dumps(value)}")


def parse_params_json(text: str | None) -> dict[str, str]:
    """A configuration as a JSON object: `{"lr": "0.01", "layers": 2}`.

    Values become the strings trials carry (numbers as JSON writes them); keys may be written as
    PAI's `${lr}`.
    """
    if text is None or not text.strip():
        return {}
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        raise InvalidInput(
            f"malformed JSON in --params: {e.msg} at line {e.lineno} column {e.colno}"
            f' (expected an object such as \'{{"lr": "0.01"}}\')'
        ) from None
    if not isinstance(data, dict):
        raise InvalidInput('--params must be a JSON object such as \'{"lr": "0.01"}\'')
    result: dict[str, str] = {}
    for key, value in data.items():
        m = _PAI_PLACEHOLDER.match(key.strip())
        name = (m.group(1) if m else key).strip()
        if not name:
            raise InvalidInput("--params has an empty parameter name")
        if name in result:
            raise InvalidInput(f"--params names parameter {name} twice")
        result[name] = parameter_text(name, value)
    return result


def parse_names(text: str | Iterable[str] | None) -> list[str]:
    """Names from `a,b` (or several options), in order, without repeats."""
    seen: list[str] = []
    for name in _split(text):
        if name not in seen:
            seen.append(name)
    return seen
