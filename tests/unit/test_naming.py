import math
import re
from datetime import datetime, timezone

from hypothesis import assume, given, strategies as st

from kubetasks.core.dedup import claim_name
from kubetasks.core.naming import (
    checkpoint_name, idempotent_run_name, job_name, label_value, run_identity_name, scheduled_run_name,
)


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


def test_a_dotted_run_name_gives_a_dotless_job_name():
    name = job_name("app.v2", 1)
    assert "." not in name and name.startswith("app-v2-") and name.endswith("-1")
    assert name != job_name("app-v2", 1) == "app-v2-1"


def test_a_scheduled_run_name_is_task_uid_qualified_only_when_asked():
    tick = datetime(2026, 11, 28, 9, 0, tzinfo=timezone.utc)
    minutes = int(tick.timestamp()) // 60
    assert scheduled_run_name("report", tick, "0f1e2d3c-aaaa") == f"report-0f1e2d3c-{minutes}"


# The validation rules of the API server (k8s.io/apimachinery/pkg/util/validation).
DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")


def is_dns_label(name: str) -> bool:  # Job names: their pods carry them as the job-name label
    return len(name) <= 63 and bool(DNS_LABEL.match(name))


def is_subdomain(name: str) -> bool:  # TaskRuns, ConfigMaps, ServiceAccounts (Roles accept more)
    return len(name) <= 253 and bool(DNS_SUBDOMAIN.match(name))


def is_label_value(value: str) -> bool:
    return len(value) <= 63 and bool(LABEL_VALUE.match(value))


ALNUM = "abcdefghijklmnopqrstuvwxyz0123456789"


@st.composite
def part(draw, size: int) -> str:
    """One dot-separated part of a subdomain, ``size`` characters."""
    if size == 1:
        return draw(st.sampled_from(ALNUM))
    inner = draw(st.text(ALNUM + "-", min_size=size - 2, max_size=size - 2))
    return draw(st.sampled_from(ALNUM)) + inner + draw(st.sampled_from(ALNUM))


@st.composite
def subdomain(draw) -> str:
    """Any valid object name: a DNS-1123 subdomain of 1..253 characters (a part may be longer
    than 63: the API server checks only the whole), long ones as likely as short ones."""
    left = draw(st.integers(1, 253))
    parts = []
    while left > 0:
        size = draw(st.integers(1, left))
        parts.append(draw(part(size)))
        left -= size + 1
    name = ".".join(parts)
    assert is_subdomain(name), name
    return name


NAMES = subdomain()
UIDS = st.uuids().map(str)
ATTEMPTS = st.integers(1, 20)
KEYS = st.text(max_size=256)
TICKS = st.datetimes(timezones=st.just(timezone.utc))


def minute(tick: datetime) -> int:
    return math.floor(tick.timestamp()) // 60


@given(NAMES, ATTEMPTS, UIDS)
def test_job_names_are_dns_labels_distinct_per_attempt(run: str, attempt: int, uid: str) -> None:
    plain, qualified = job_name(run, attempt), job_name(run, attempt, uid)
    assert is_dns_label(plain) and is_dns_label(qualified), (plain, qualified)
    assert plain == job_name(run, attempt) and qualified == job_name(run, attempt, uid)
    assert plain != qualified
    assert plain.endswith(f"-{attempt}") and qualified.endswith(f"-{uid[:8]}-{attempt}")
    others = {job_name(run, a) for a in range(1, 21)} | {job_name(run, a, uid) for a in range(1, 21)}
    assert len(others) == 40  # every attempt of a run, plain or qualified, has its own Job


@given(NAMES, NAMES, ATTEMPTS)
def test_distinct_runs_get_distinct_job_names(run: str, other: str, attempt: int) -> None:
    assume(run != other)
    assert job_name(run, attempt) != job_name(other, attempt)


@given(NAMES, UIDS)
def test_identity_and_checkpoint_names_are_subdomains(run: str, uid: str) -> None:
    steps, identity = checkpoint_name(run, uid), run_identity_name(run, uid)
    assert is_subdomain(steps) and is_subdomain(identity), (steps, identity)
    assert steps == checkpoint_name(run, uid) and identity == run_identity_name(run, uid)
    assert steps != identity


@given(NAMES, NAMES, UIDS, UIDS)
def test_identity_and_checkpoint_names_differ_per_run_and_uid(run: str, other: str, uid: str, other_uid: str) -> None:
    # A run re-created under its name gets other objects: names keep 32 bits of the UID, random
    # for every object the API server creates.
    assume((run, uid[:8]) != (other, other_uid[:8]))
    assert checkpoint_name(run, uid) != checkpoint_name(other, other_uid)
    assert run_identity_name(run, uid) != run_identity_name(other, other_uid)


@given(NAMES, TICKS, UIDS)
def test_scheduled_run_names_are_subdomains(task: str, tick: datetime, uid: str) -> None:
    plain, qualified = scheduled_run_name(task, tick), scheduled_run_name(task, tick, uid)
    assert is_subdomain(plain) and is_subdomain(qualified), (plain, qualified)
    assert len(plain) <= 63 and len(qualified) <= 63
    assert plain == scheduled_run_name(task, tick.replace(second=0, microsecond=0)) != qualified
    assert label_value(plain) == plain  # at most 63: the run's own labels carry it as it is


@given(NAMES, TICKS, NAMES, TICKS)
def test_scheduled_run_names_differ_per_task_and_minute(task: str, tick: datetime, other: str, other_tick: datetime) -> None:
    assume((task, minute(tick)) != (other, minute(other_tick)))
    assert scheduled_run_name(task, tick) != scheduled_run_name(other, other_tick)


@given(NAMES, KEYS)
def test_idempotent_run_and_claim_names_are_subdomains(task: str, key: str) -> None:
    run, claim = idempotent_run_name(task, key), claim_name(task, key)
    assert is_subdomain(run) and is_subdomain(claim), (run, claim)
    assert run == idempotent_run_name(task, key) and claim == claim_name(task, key)


@given(NAMES, KEYS, NAMES, KEYS)
def test_idempotent_run_and_claim_names_differ_per_task_and_key(task: str, key: str, other: str, other_key: str) -> None:
    assume((task, key) != (other, other_key))
    assert idempotent_run_name(task, key) != idempotent_run_name(other, other_key)
    assert claim_name(task, key) != claim_name(other, other_key)


@given(NAMES, NAMES)
def test_label_values_are_valid_and_distinct(name: str, other: str) -> None:
    value = label_value(name)
    assert is_label_value(value) and value == label_value(name)
    if len(name) <= 63:
        assert value == name
    else:  # a prefix of the name and a hash of the whole
        assert value[-9] == "-" and name.startswith(value[:-9])
    assume(name != other)
    assert value != label_value(other)
