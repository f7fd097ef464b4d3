"""The one place timestamps are written and read."""

from datetime import UTC, datetime, timedelta

import pytest

from hpo_operator.core import times

T = datetime(2024, 5, 1, 10, 0, 7, 123456, tzinfo=UTC)


def test_iso_is_metav1_time_in_whole_seconds_and_parses_back():
    assert times.iso(T) == "2024-05-01T10:00:07Z"
    assert times.parse(times.iso(T)) == T.replace(microsecond=0)


def test_micro_keeps_microseconds_for_leases():
    assert times.micro(T) == "2024-05-01T10:00:07.123456Z"
    assert times.parse(times.micro(T)) == T


def test_now_is_utc():
    assert times.now().tzinfo is UTC
    assert abs(times.parse(times.iso()) - times.now()) < timedelta(seconds=5)


def test_parse():
    assert times.parse(None) is None
    assert times.parse("2024-05-01T10:00:00Z") == datetime(2024, 5, 1, 10, tzinfo=UTC)
    assert times.parse(datetime(2024, 5, 1)) == datetime(2024, 5, 1, tzinfo=UTC)
    aware = datetime(2024, 5, 1, tzinfo=UTC)
    assert times.parse(aware) is aware
    with pytest.raises(ValueError):
        times.parse("yesterday")


def test_parse_or_none_reads_what_it_can_in_utc():
    assert times.parse_or_none("2024-05-01T12:00:00+02:00") == datetime(2024, 5, 1, 10, tzinfo=UTC)
    assert times.parse_or_none("2024-05-01T12:00:00+02:00").tzinfo == UTC
    assert times.parse_or_none("yesterday") is None
    assert times.parse_or_none("") is None and times.parse_or_none(None) is None


def test_display():
    assert times.display(T) == "2024-05-01 10:00:07"
    assert times.display(None) == ""
