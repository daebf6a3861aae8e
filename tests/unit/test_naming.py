import re
from datetime import datetime, timezone

from hypothesis import given, strategies as st

from kubetasks.core.naming import checkpoint_name, idempotent_run_name, job_name, label_value, scheduled_run_name


def test_job_names_are_run_and_attempt():
    assert job_name("resize-images-x7k2p", 3) == "resize-images-x7k2p-3"


def test_long_names_are_shortened_stably_within_63_characters():
    run = "a" * 80
    name = job_name(run, 12)
    assert len(name) <= 63 and name.endswith("-12")
    assert name == job_name(run, 12)
    assert job_name("a" * 79 + "b", 12) != name  # the hash keeps distinct runs distinct


def test_scheduled_runs_are_named_by_unix_minutes_like_cronjobs():
    tick = datetime(2026, 11, 28, 9, 0, tzinfo=timezone.utc)
    assert scheduled_run_name("report", tick) == f"report-{int(tick.timestamp()) // 60}"


def test_idempotent_names_depend_on_task_and_key():
    assert idempotent_run_name("t", "k") == idempotent_run_name("t", "k")
    assert idempotent_run_name("t", "k") != idempotent_run_name("t", "k2")
    assert idempotent_run_name("t", "k") != idempotent_run_name("u", "k")
    assert checkpoint_name("run-1", "0f1e2d3c-aaaa") == "run-1-0f1e2d3c-steps"


def test_a_job_name_is_uid_qualified_only_when_asked():
    assert job_name("run-1", 2) == "run-1-2"
    assert job_name("run-1", 2, "0f1e2d3c-aaaa") == "run-1-0f1e2d3c-2"
    assert len(job_name("r" * 63, 20, "0f1e2d3c-aaaa")) <= 63


LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")
# Object names: DNS-1123 subdomains of up to 253 characters.
SUBDOMAIN = st.from_regex(r"\A[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?\Z")


@given(SUBDOMAIN)
def test_any_object_name_makes_a_valid_label_value(name: str) -> None:
    value = label_value(name)
    assert len(value) <= 63 and LABEL_VALUE.match(value)
    assert value == name if len(name) <= 63 else value != label_value(name[:-1] + ("a" if name[-1] != "a" else "b"))
