"""core.times: the one time parser (strict and tolerant) and the one formatter."""

from datetime import datetime, timedelta, timezone

import pytest
from hypothesis import given, strategies as st

from kubetasks.api.times import api_time, format_time, parse_time

T = datetime(2026, 1, 2, 3, 4, 5, 678000, tzinfo=timezone.utc)


def test_api_times_and_typed_ones_read_as_aware_utc_datetimes():
    assert parse_time("2026-01-02T03:04:05.678Z") == T
    assert parse_time("2026-01-02T04:04:05.678+01:00") == T
    assert parse_time(" 2026-01-02T03:04:05.678 ") == T  # no zone: UTC
    assert parse_time("2026-01-02") == datetime(2026, 1, 2, tzinfo=timezone.utc)  # a date typed in a filter
    assert parse_time(T.replace(tzinfo=None)) == T and parse_time(T) is T
    assert parse_time(None) is None and parse_time("") is None


@pytest.mark.parametrize("bad", ["yesterday", "2026-13-01", 20260102, ["2026-01-02"], {"t": 1}])
def test_what_is_not_a_time_is_an_error_strictly_and_none_tolerantly(bad):
    with pytest.raises(ValueError):
        parse_time(bad)
    assert api_time(bad) is None


@given(st.datetimes(min_value=datetime(1970, 1, 2), max_value=datetime(9999, 12, 30),
                    timezones=st.sampled_from([timezone.utc, timezone(timedelta(hours=-7)), timezone(timedelta(hours=5, minutes=30))])))
def test_what_is_written_reads_back(moment):
    for timespec, unit in (("milliseconds", timedelta(milliseconds=1)), ("microseconds", timedelta(microseconds=1)),
                           ("seconds", timedelta(seconds=1))):
        text = format_time(moment, timespec)  # type: ignore[arg-type]
        assert text.endswith("Z")
        back = parse_time(text)
        assert back is not None and timedelta(0) <= moment - back < unit
