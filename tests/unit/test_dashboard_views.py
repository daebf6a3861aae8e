"""The dashboard's pure part: the runs list's query (filters, newest first, paging that stays fast
at 10,000 runs), the pages' HTML (hostile names and payloads escaped, empty states, odd data)."""

from __future__ import annotations

import json
import re
import time
from datetime import datetime, timedelta, timezone
from html.parser import HTMLParser
from typing import Any

from hypothesis import given, settings, strategies as st

from kubetasks.core.tracing import run_trace
from kubetasks.dashboard import views
from kubetasks.dashboard.views import RunDetails, RunQuery, parse_query, select_runs

UTC = timezone.utc
NOW = datetime(2026, 11, 29, 12, 0, tzinfo=UTC)
T0 = datetime(2026, 11, 1, tzinfo=UTC)


def stamp(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def run(name: str, created: datetime = T0, task: str = "t", phase: str | None = "Succeeded", ns: str = "ns",
        tags: list[str] | None = None, **status: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"metadata": {"name": name, "namespace": ns, "uid": f"uid-{name}",
                                         "creationTimestamp": stamp(created)},
                            "spec": {"taskRef": task, "tags": tags or []}, "status": dict(status)}
    if phase is not None:
        body["status"]["phase"] = phase
    return body


def many(n: int) -> list[dict[str, Any]]:
    """n runs a second apart (several per second too, so names break ties), in no particular order."""
    phases = ["Succeeded", "Failed", "Running", "Pending", "Cancelled"]
    runs = [run(f"r{i:05d}", T0 + timedelta(seconds=i // 3), task=f"t{i % 7}", phase=phases[i % 5],
                ns=f"ns{i % 2}", tags=["even"] if i % 2 == 0 else ["odd", "x"]) for i in range(n)]
    return runs[::2] + runs[1::2]


def names(runs: list[dict[str, Any]]) -> list[str]:
    return [r["metadata"]["name"] for r in runs]


def walk(runs: list[dict[str, Any]], query: RunQuery) -> list[str]:
    """Every page, following the next cursors from the newest."""
    seen: list[str] = []
    cursor = ""
    for _ in range(10_000):
        page = select_runs(runs, RunQuery(**{**query.__dict__, "cursor": cursor}))
        assert page.offset == len(seen)
        seen += names(page.items)
        if page.next is None:
            return seen
        cursor = page.next
    raise AssertionError("paging does not end")


# The query ----------------------------------------------------------------------------------

def test_parse_query_reads_filters_and_names_what_it_cannot_read():
    q = parse_query({"task": " resize ", "phase": "Failed", "tag": "a", "namespace": "ns", "after": "2026-11-02",
                     "before": "2026-11-03T10:30", "limit": "9999"})
    assert (q.task, q.phase, q.tag, q.namespace) == ("resize", "Failed", "a", "ns")
    assert q.after == datetime(2026, 11, 2, tzinfo=UTC) and q.before == datetime(2026, 11, 3, 10, 30, tzinfo=UTC)
    assert q.limit == views.MAX_LIMIT and q.errors == ()
    bad = parse_query({"after": "yesterday", "limit": "ten"})
    assert bad.after is None and bad.limit == views.DEFAULT_LIMIT
    assert [m.split(":")[0] for m in bad.errors] == ["after", "limit"]


def test_an_offset_in_a_time_filter_is_honoured():
    assert parse_query({"after": "2026-11-02T01:00+01:00"}).after == datetime(2026, 11, 2, tzinfo=UTC)


def test_filters_select_by_task_phase_tag_namespace_and_creation_time():
    runs = many(300)
    every = {n: r for n, r in zip(names(runs), runs)}

    def chosen(**params: str) -> set[str]:
        return set(names(select_runs(runs, parse_query({**params, "limit": "500"})).items))

    assert chosen(task="t3") == {n for n, r in every.items() if r["spec"]["taskRef"] == "t3"}
    assert chosen(phase="Failed") == {n for n, r in every.items() if r["status"]["phase"] == "Failed"}
    assert chosen(phase="active") == {n for n, r in every.items() if r["status"]["phase"] in ("Running", "Pending")}
    assert chosen(phase="finished") == {n for n, r in every.items()
                                        if r["status"]["phase"] in ("Succeeded", "Failed", "Cancelled")}
    assert chosen(tag="odd") == {n for n, r in every.items() if "odd" in r["spec"]["tags"]}
    assert chosen(namespace="ns1") == {n for n, r in every.items() if r["metadata"]["namespace"] == "ns1"}
    after, before = stamp(T0 + timedelta(seconds=10)), stamp(T0 + timedelta(seconds=20))
    assert chosen(after=after, before=before) == {n for n, r in every.items()
                                                  if after <= r["metadata"]["creationTimestamp"] < before}
    assert chosen(task="t1", phase="Failed", tag="even", namespace="ns0") == {
        n for n, r in every.items() if r["spec"]["taskRef"] == "t1" and r["status"]["phase"] == "Failed"
        and "even" in r["spec"]["tags"] and r["metadata"]["namespace"] == "ns0"}
    assert chosen(task="nothing-like-it") == set()


def test_paging_10000_runs_visits_each_once_newest_first_and_back():
    runs = many(10_000)
    expected = names(sorted(runs, key=views.sort_key, reverse=True))
    assert walk(runs, RunQuery(limit=100)) == expected
    # From the last page back to the first, through the prev cursors.
    page = select_runs(runs, RunQuery(limit=100, cursor=views.encode_cursor("a", views.sort_key(
        next(r for r in runs if r["metadata"]["name"] == expected[-101])))))
    assert names(page.items) == expected[-100:] and page.next is None and page.offset == 9_900
    back: list[str] = []
    while page.prev:
        page = select_runs(runs, RunQuery(limit=100, cursor=page.prev))
        back = names(page.items) + back
    assert back == expected[:-100] and page.offset == 0


def test_a_page_of_10000_runs_is_selected_by_tag_and_phase_and_rendered():
    # How long it takes is bench/dashboard.py's to say (a timed test fails on a busy machine).
    runs = many(10_000)
    query = parse_query({"tag": "even", "phase": "finished"})
    page = select_runs(runs, query)
    html = views.runs_page(page, query, ["t1"], ["ns0"], NOW)
    assert page.total == 3_000 and len(page.items) == views.DEFAULT_LIMIT
    assert html.count('data-testid="run-row"') == views.DEFAULT_LIMIT


def test_a_filter_of_a_task_or_tag_in_one_namespace_offers_to_cancel_what_it_matches():
    def page(params: dict, namespaces=("ns0", "ns1")) -> str:
        query = parse_query(params)
        return views.runs_page(select_runs([], query), query, ["t1"], list(namespaces), NOW)

    html = page({"namespace": "ns1", "task": "t1", "phase": "Queued", "cursor": "a123", "limit": "20"})
    form = html[html.index('<form method="post" action="/actions/cancel-matching"'):]
    form = form[:form.index("</form>")]
    fields = dict(re.findall(r'<input type="hidden" name="([^"]+)" value="([^"]*)">', form))
    assert fields == {"namespace": "ns1", "task": "t1", "phase": "Queued"}  # every page's runs, not this page's
    assert 'data-confirm="Cancel every unfinished run of t1 in phase Queued in ns1?"' in form
    assert 'name="namespace" value="ns0"' in page({"tag": "eu"}, namespaces=["ns0"])  # the one namespace there is
    for params in ({"namespace": "ns1"}, {"namespace": "ns1", "phase": "Queued"}, {"tag": "eu"},
                   {"namespace": "ns1", "task": "t1", "phase": "finished"}, {"namespace": "ns1", "task": "t1", "phase": "Failed"}):
        assert "cancel-matching" not in page(params), params  # a whole namespace, an unknown one, or nothing to cancel


def test_an_unreadable_cursor_shows_the_newest_and_says_so():
    runs = many(10)
    page = select_runs(runs, RunQuery(cursor="garbage!"))
    assert names(page.items)[0] == "r00009" and page.offset == 0
    assert any("cursor" in m for m in page.errors)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 40), st.sampled_from(["a", "b"]), st.sampled_from(views.PHASES + ("Odd",)),
                          st.booleans()), max_size=60, unique_by=lambda t: t),
       st.sampled_from(["", "a"]), st.sampled_from(["", "Failed", "active", "finished"]),
       st.sampled_from(["", "x"]), st.integers(1, 7))
def test_paging_equals_filtering_and_sorting_everything(spec, task, phase, tag, limit):
    runs = [run(f"r{i}", T0 + timedelta(minutes=minute), task=t, phase=p, tags=["x"] if tagged else [])
            for i, (minute, t, p, tagged) in enumerate(spec)]
    query = RunQuery(task=task, phase=phase, tag=tag, limit=limit)
    test = views.matches(query) or (lambda r: True)
    expected = names(sorted([r for r in runs if test(r)], key=views.sort_key, reverse=True))
    assert walk(runs, query) == expected
    assert select_runs(runs, query).total == len(expected)


# HTML ---------------------------------------------------------------------------------------

HOSTILE = '<script>alert("x")</script><img src=x onerror=alert(1)>&amp;"\''


class Tags(HTMLParser):
    """The tags and attributes of a page, as a browser would read them."""

    def __init__(self) -> None:
        super().__init__()
        self.tags: list[str] = []
        self.attributes: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append(tag)
        self.attributes += [a for a, _ in attrs]


def parsed(html: str) -> Tags:
    tags = Tags()
    tags.feed(html)
    return tags


def assert_inert(html: str) -> None:
    """No tag or attribute came from the data: no img, no inline script, no event handler."""
    tags = parsed(html)
    assert "img" not in tags.tags
    assert not [a for a in tags.attributes if a.startswith("on")]
    assert tags.tags.count("script") == 1  # the page's own, with src


def hostile_run() -> dict[str, Any]:
    body = run(HOSTILE, task=HOSTILE, ns="ns", tags=[HOSTILE], phase=HOSTILE,
               attempts=[{"attempt": 1, "jobName": HOSTILE, "reason": HOSTILE, "message": HOSTILE,
                          "startTime": stamp(T0)}],
               steps=[{"name": HOSTILE, "attempt": 1, "durationSeconds": 2}],
               result={HOSTILE: HOSTILE}, error={"type": HOSTILE, "message": HOSTILE, "traceback": HOSTILE},
               conditions=[{"type": "Succeeded", "status": "Unknown", "reason": HOSTILE, "message": HOSTILE}])
    body["spec"].update(payload={"k": HOSTILE}, idempotencyKey=HOSTILE, parentRun=HOSTILE)
    return body


def test_hostile_names_payloads_and_messages_are_escaped_everywhere():
    body = hostile_run()
    details = RunDetails(task={"metadata": {"name": HOSTILE}, "spec": {"machine": {"cpu": HOSTILE}}},
                         events=[{"type": "Warning", "reason": HOSTILE, "message": HOSTILE}],
                         logs={1: views.AttemptLog(HOSTILE, HOSTILE)}, notes=[HOSTILE])
    pages = [views.run_page(body, details, NOW),
             views.runs_page(select_runs([body], RunQuery()), parse_query({"task": HOSTILE, "tag": HOSTILE}),
                             [HOSTILE], [HOSTILE], NOW)]
    task = {"metadata": {"name": HOSTILE, "namespace": "ns"},
            "spec": {"image": HOSTILE, "schedule": HOSTILE, "payload": {"p": HOSTILE}, "command": [HOSTILE]}}
    summary = views.task_summary(task, [body], NOW)
    pages += [views.task_page(task, [body], summary, NOW), views.tasks_page([(task, summary)], NOW)]
    for html in pages:
        assert_inert(html)
        assert "&lt;script&gt;" in html


@settings(max_examples=100, deadline=None)
@given(st.text(max_size=40))
def test_any_text_in_a_run_stays_text(text):
    body = run("r", tags=[text], phase=text, attempts=[{"attempt": 1, "jobName": "j", "message": text}])
    body["spec"]["payload"] = text
    html = views.run_page(body, RunDetails(events=[{"message": text}], logs={1: views.AttemptLog(text, text)}), NOW)
    assert_inert(html)
    assert views.run_rows([body], NOW).count("<tr") == 1


def test_empty_states_say_there_is_nothing():
    assert 'data-testid="no-runs"' in views.runs_page(select_runs([], RunQuery()), RunQuery(), [], [], NOW)
    assert 'data-testid="no-tasks"' in views.tasks_page([], NOW)
    task = {"metadata": {"name": "t", "namespace": "ns"}, "spec": {"image": "i"}}
    html = views.task_page(task, [], views.task_summary(task, [], NOW), NOW)
    assert 'data-testid="no-runs"' in html and 'data-testid="no-durations"' in html and "none yet" in html
    bare = views.run_page({"metadata": {"name": "r", "namespace": "ns"}, "spec": {"taskRef": "t"}}, RunDetails(), NOW)
    for hook in ("no-attempts", "no-steps", "no-logs", "no-events"):
        assert f'data-testid="{hook}"' in bare
    assert 'id="cancel-button"' in bare  # Pending: not finished, so it may be cancelled


def test_odd_data_is_shown_as_it_is():
    odd = {"metadata": {"name": "r", "namespace": "ns", "creationTimestamp": "not a time"},
           "spec": "not a dict", "status": {"phase": "Exploded", "attempts": [None, {"attempt": "two"}],
                                           "steps": ["x"], "startTime": "garbage", "error": "not a dict"}}
    html = views.run_page(odd, RunDetails(task={"spec": {"machine": "huge"}}), NOW)
    assert 'class="phase unknown"' in html and "Exploded" in html
    row = views.run_rows([odd], NOW)
    assert 'data-phase="Exploded"' in row and "<time" not in row
    assert views.phase_of({}) == "Pending"
    nameless = {"metadata": {}, "status": None}
    assert "Pending" in views.run_rows([nameless], NOW)


def test_a_finished_run_has_no_cancel_button_and_an_unfinished_one_says_why_it_waits():
    done = run("r", phase="Succeeded")
    html = views.run_page(done, RunDetails(), NOW)
    assert "cancel-button" not in html and 'data-live="unfinished"' not in html  # nothing left to follow
    waiting = run("w", phase="Retrying", nextRetryAt=stamp(NOW + timedelta(seconds=90)),
                  conditions=[{"type": "Succeeded", "status": "Unknown", "reason": "Retrying",
                               "message": "attempt 1 failed: OOMKilled"}])
    reason = views.waiting_reason(waiting, NOW)
    assert reason is not None and "attempt 1 failed: OOMKilled" in reason and "in 1m30s" in reason
    html = views.run_page(waiting, RunDetails(), NOW)
    assert 'id="waiting-reason"' in html and html.count('data-live="unfinished"') == 2  # followed by the script
    assert views.waiting_reason(done, NOW) is None


def test_a_finished_run_has_a_replay_button_and_an_unfinished_one_has_none():
    html = views.run_page(run("r&1", phase="Failed", ns="n<s"), RunDetails(), NOW)
    assert 'id="replay-button"' in html and 'id="replay-form"' in html and 'data-action="replay"' in html
    assert 'action="/actions/replay"' in html and "cancel-button" not in html
    assert '<input type="hidden" name="namespace" value="n&lt;s">' in html  # the fields the action reads
    assert '<input type="hidden" name="name" value="r&amp;1">' in html
    for unfinished in ("Running", "Pending", "Retrying", None):
        html = views.run_page(run("r", phase=unfinished), RunDetails(), NOW)
        assert "replay-button" not in html and 'id="cancel-button"' in html, unfinished
    cancelling = run("r", phase="Running")
    cancelling["spec"]["cancel"] = True
    assert "replay-button" not in views.run_page(cancelling, RunDetails(), NOW)  # not finished until it stops


def test_the_attempts_timeline_shows_machine_duration_and_exit_reason():
    body = run("r", phase="Succeeded", attempts=[
        {"attempt": 1, "jobName": "r-1", "startTime": stamp(T0), "completionTime": stamp(T0 + timedelta(seconds=30)),
         "reason": "OOMKilled", "exitCode": 137},
        {"attempt": 2, "jobName": "r-2", "startTime": stamp(T0 + timedelta(seconds=40)),
         "completionTime": stamp(T0 + timedelta(seconds=100)), "reason": "Succeeded", "exitCode": 0}])
    task = {"spec": {"image": "i", "machine": {"preset": "micro"}, "retry": {"outOfMemoryMachine": {"memory": "1Gi"}}}}
    html = views.run_page(body, RunDetails(task=task), NOW)
    rows = re.findall(r'<tr data-testid="attempt-row".*?</tr>', html, re.S)
    assert len(rows) == 2
    assert "250m CPU / 256Mi" in rows[0] and "30s" in rows[0] and "OOMKilled" in rows[0] and ">137<" in rows[0]
    assert "250m CPU / 1Gi" in rows[1] and "1m" in rows[1] and "Succeeded" in rows[1]
    assert html.count('class="bar ') == 2


def test_every_attempt_after_an_oom_killed_one_shows_the_bigger_machine():
    body = run("r", phase="Succeeded", attempts=[
        {"attempt": n, "jobName": f"r-{n}", "startTime": stamp(T0), "completionTime": stamp(T0), "reason": reason}
        for n, reason in enumerate(["OOMKilled", "Error", "Succeeded"], start=1)])
    task = {"spec": {"image": "i", "machine": {"preset": "micro"}, "retry": {"outOfMemoryMachine": {"memory": "1Gi"}}}}
    rows = re.findall(r'<tr data-testid="attempt-row".*?</tr>', views.run_page(body, RunDetails(task=task), NOW), re.S)
    assert ["1Gi" in row for row in rows] == [False, True, True]


def test_a_task_summary_has_next_ticks_success_rate_and_last_run():
    task = {"metadata": {"name": "t", "namespace": "ns"},
            "spec": {"image": "i", "schedule": "*/15 * * * *", "timezone": "Europe/Berlin"}}
    runs = [run(f"r{i}", T0 + timedelta(minutes=i), phase=p, startTime=stamp(T0), completionTime=stamp(T0))
            for i, p in enumerate(["Succeeded", "Succeeded", "Failed", "TimedOut", "Cancelled", "Running"])]
    summary = views.task_summary(task, runs, NOW)
    assert summary.next_ticks == [NOW + timedelta(minutes=15 * i) for i in range(1, 6)]
    assert summary.success_rate == 0.5 and summary.rated == 4 and summary.active == 1
    assert summary.last_run is not None and summary.last_run["metadata"]["name"] == "r5"
    html = views.task_page(task, runs, summary, NOW)
    assert html.count('data-testid="next-tick"') == 5 and "CET" in html and "50%" in html
    assert html.count('data-testid="duration-bar"') == 5  # finished runs only
    suspended = {**task, "spec": {**task["spec"], "suspend": True}}
    assert views.task_summary(suspended, runs, NOW).next_ticks == []
    broken = {**task, "spec": {**task["spec"], "schedule": "61 * * * *"}}
    assert views.task_summary(broken, runs, NOW).schedule_error
    assert 'data-testid="schedule-error"' in views.task_page(broken, runs, views.task_summary(broken, runs, NOW), NOW)


def test_the_next_run_is_the_one_waiting_to_start_else_the_next_tick():
    task = {"metadata": {"name": "t", "namespace": "ns"}, "spec": {"image": "i", "schedule": "0 * * * *"}}
    ticking = views.task_page(task, [], views.task_summary(task, [], NOW), NOW)
    assert re.search(r'id="next-run">2026-11-29 13:00:00 UTC \(scheduled\)', ticking)
    later = run("later", NOW, phase="Delayed")
    later["spec"]["delay"] = "2h"
    sooner = run("sooner", NOW - timedelta(minutes=1), phase="Delayed")
    sooner["spec"]["notBefore"] = stamp(NOW + timedelta(minutes=30))
    runs = [later, sooner, run("done", NOW - timedelta(hours=1))]
    summary = views.task_summary(task, runs, NOW)
    assert summary.waiting is sooner
    html = views.task_page(task, runs, summary, NOW)
    assert re.search(r'id="next-run"><a href="/runs/ns/sooner">sooner</a> .*?at 2026-11-29 12:30:00 UTC', html)


def test_the_durations_chart_shows_at_most_the_last_30_finished_runs():
    runs = [run(f"r{i}", T0 + timedelta(minutes=i), startTime=stamp(T0), completionTime=stamp(T0 + timedelta(
        seconds=i + 1))) for i in range(50)]
    chart = views.durations_chart(runs, NOW)
    assert chart.count("<rect") == views.CHART_RUNS
    assert "r49" in chart and "r19" not in chart


def test_links_quote_names():
    assert views.run_url("ns", "a/b?c") == "/runs/ns/a%2Fb%3Fc"
    assert RunQuery(task="a&b", phase="Failed").url("/") == "/?task=a%26b&phase=Failed"


JSON_VALUES = st.recursive(st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
                           lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner,
                                                                                        max_size=3), max_leaves=8)
RUN_KEYS = ["phase", "attempt", "attempts", "steps", "startTime", "completionTime", "duration", "result", "error",
            "conditions", "nextRetryAt", "wakeAt", "duplicateOf", "taskRef", "tags", "payload", "cancel", "delay",
            "notBefore", "parentRun", "machine", "retry", "schedule", "timezone", "suspend", "idempotencyKey"]
ODD_PART = st.dictionaries(st.sampled_from(RUN_KEYS), JSON_VALUES, max_size=8) | JSON_VALUES


@settings(max_examples=300, deadline=None)
@given(ODD_PART, ODD_PART, st.dictionaries(st.sampled_from(["name", "namespace", "creationTimestamp", "uid"]),
                                           JSON_VALUES, max_size=4))
def test_pages_survive_any_json_where_a_run_or_task_is_expected(spec, status, meta):
    body = {"metadata": meta, "spec": spec, "status": status}
    views.run_page(body, RunDetails(task=body, events=[body], logs={1: views.AttemptLog(None, "x")}), NOW)
    views.run_rows([body], NOW)
    views.run_summary(body, NOW)
    summary = views.task_summary(body, [body], NOW)
    views.task_page(body, [body], summary, NOW)
    views.tasks_page([(body, summary)], NOW)
    select_runs([body, run("r")], parse_query({"tag": "x", "after": "2026-01-01"}))


# Values cut before they are formatted -------------------------------------------------------

def nested(depth: int, leaf: Any = 1) -> Any:
    """A value ``depth`` objects deep, built without recursion (as the API server allows 10,000)."""
    value = leaf
    for i in range(depth):
        value = {"a": value} if i % 2 else [value]
    return value


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=300),
    lambda inner: st.lists(inner, max_size=30) | st.dictionaries(st.text(max_size=20), inner, max_size=30),
    max_leaves=400)


def depth_of(value: Any) -> int:
    deepest, todo = 0, [(value, 0)]
    while todo:
        v, d = todo.pop()
        if isinstance(v, (dict, list)):
            deepest = max(deepest, d + 1)
            todo.extend((x, d + 1) for x in (v.values() if isinstance(v, dict) else v))
    return deepest


@settings(max_examples=200, deadline=None)
@given(json_values, st.integers(1, 12), st.integers(0, 4000))
def test_clip_bounds_depth_and_size_and_keeps_what_fits(value, max_depth, max_bytes):
    shown, cut = views.clip(value, max_depth, max_bytes)
    text = json.dumps(shown, indent=2, sort_keys=True, ensure_ascii=False)
    assert depth_of(shown) <= max_depth
    assert len(text) <= max_bytes + 100 + 60 * max_depth  # the markers' slack: one a level at most
    if not cut:  # nothing cut: the value as it was
        assert shown == value


def test_a_10000_deep_payload_renders_small_and_fast_with_a_note():
    deep = nested(10_000)
    started = time.perf_counter()
    html = views.pretty_json(deep, "The payload")
    assert time.perf_counter() - started < 0.05
    assert len(html) < 5_000 and 'data-testid="value-cut"' in html and "The payload is shown cut" in html
    assert "nested deeper than 20 levels" in html


def test_a_huge_payload_is_cut_to_about_the_shown_bytes():
    wide = {f"key{i:05d}": "x" * 1000 for i in range(5_000)}  # 5 MB
    shown, cut = views.clip(wide)
    text = json.dumps(shown, indent=2)
    assert cut and len(text) <= views.SHOWN_BYTES + 2048 and shown[views.CUT].endswith("more keys")
    long = views.clip("y" * 1_000_000)[0]
    assert long.endswith(views.CUT) and len(long) <= views.SHOWN_BYTES
    assert views.clip({"a": [1, 2, {"b": "c"}]}) == ({"a": [1, 2, {"b": "c"}]}, False)


def test_a_run_page_with_deep_and_huge_values_is_bounded():
    body = run("deep", phase="Failed", error={"type": "E", "message": "m" * 500_000, "traceback": "t\n" * 300_000},
               result=nested(10_000, "x" * 100))
    body["spec"]["payload"] = nested(10_000)
    started = time.perf_counter()
    html = views.run_page(body, RunDetails(), NOW)
    assert time.perf_counter() - started < 0.2
    assert len(html) < 4 * views.SHOWN_BYTES and html.count('data-testid="value-cut"') == 3
    task = {"metadata": {"name": "t", "namespace": "ns"}, "spec": {"payload": nested(10_000)}}
    page = views.task_page(task, [], views.task_summary(task, [], NOW), NOW)
    assert "default payload is shown cut" in page


def test_a_result_kept_by_reference_shows_its_size_and_digest():
    ref = {"uri": "s3://b/runs/ns/u/attempt-1/result", "size": 20_000_000, "sha256": "ab" * 32}
    run = {"metadata": {"name": "r", "namespace": "ns"}, "spec": {"taskRef": "t"},
           "status": {"phase": "Succeeded", "resultRef": ref}}
    html = views.run_page(run, RunDetails(), NOW)
    assert 'data-testid="result-ref"' in html and "20,000,000 bytes" in html and "ab" * 32 in html
    assert "No result." not in html


def test_a_runs_page_links_its_trace():
    traced = run("r", phase="Succeeded")
    traced["metadata"].update(uid="u-1", annotations={
        "kubetasks.io/traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"})
    html = views.run_page(traced, RunDetails(trace_url="http://jaeger:16686/trace/{traceId}"), NOW)
    assert '<a href="http://jaeger:16686/trace/0af7651916cd43dd8448eb211c80319c" data-testid="trace-id"' in html
    plain = views.run_page(traced, RunDetails(), NOW)  # no template: the id alone
    assert '<code data-testid="trace-id">0af7651916cd43dd8448eb211c80319c</code>' in plain and "jaeger" not in plain
    untraced = run("r", phase="Succeeded")  # no caller's context: the run's own trace (core.tracing.run_trace)
    own = f"{run_trace(untraced['metadata']).trace_id:032x}"
    linked = views.run_page(untraced, RunDetails(trace_url="http://jaeger:16686/trace/{traceId}"), NOW)
    assert f'<a href="http://jaeger:16686/trace/{own}" data-testid="trace-id"' in linked
    # With no trace page and no caller's trace, nothing says that id names any span: none is shown.
    assert own not in views.run_page(untraced, RunDetails(), NOW)
