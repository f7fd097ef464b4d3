"""Times as the Kubernetes API writes them: RFC 3339 in UTC. Every module reads and writes
timestamps through these, so that a status written by the planner parses in the plugin."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any


def now() -> datetime:
    return datetime.now(UTC)


def iso(t: datetime | None = None) -> str:
    """metav1.Time: whole seconds (now, when not given)."""
    return (t or now()).strftime("%Y-%m-%dT%H:%M:%SZ")


def micro(t: datetime | None = None) -> str:
    """metav1.MicroTime, as Leases take it."""
    return (t or now()).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def parse(value: Any) -> datetime | None:
    """A timestamp from the API (or a datetime, naive meaning UTC); None for None. Raises
    ValueError on text that is not a time: the operator reads only what the API server wrote."""
    if value is None:
        return None
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=UTC)
    return datetime.fromisoformat(str(value).replace("Z", "+00:00"))


def parse_or_none(value: str | None) -> datetime | None:
    """As parse(), in UTC, but None for anything that is not a time: a reader shows what it can."""
    try:
        parsed = parse(value or None)
    except ValueError:
        return None
    return parsed.astimezone(UTC) if parsed else None


def display(t: datetime | None) -> str:
    """For tables: `yyyy-mm-dd hh:mm:ss` in UTC, empty for no time."""
    return t.strftime("%Y-%m-%d %H:%M:%S") if t else ""
