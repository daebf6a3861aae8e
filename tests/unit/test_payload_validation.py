"""Payload validation is local and bounded (issue 11): no remote $ref is fetched, regexes run in
linear time, deep payloads are refused without recursion, messages never quote the payload."""

import json
import time

import pytest

from kubetasks.core import payload as payload_module
from kubetasks.core.payload import MAX_DEPTH, MESSAGE_LIMIT, depth_error, payload_error, schema_error


def deep(n: int) -> object:
    value: object = 1
    for _ in range(n):
        value = {"a": [value]} if n % 2 else {"a": value}
    return value


def test_valid_payloads_pass_and_invalid_ones_say_where_and_which_keyword():
    schema = {"type": "object", "required": ["url"], "properties": {"url": {"type": "string"}}}
    assert payload_error(schema, {"url": "https://x"}) is None
    message = payload_error(schema, {"url": 5})
    assert message == "payload at /url does not match the payloadSchema: type: must satisfy type=\"string\""
    assert "required" in payload_error(schema, {}) and "'url'" in payload_error(schema, {})


@pytest.mark.parametrize("schema, bad", [
    ({"properties": {"password": {"type": "integer"}}}, {"password": "hunter2-SECRET"}),
    ({"properties": {"k": {"enum": ["a", "b"]}}}, {"k": "hunter2-SECRET"}),
    ({"properties": {"k": {"const": "a"}}}, {"k": "hunter2-SECRET"}),
    ({"properties": {"k": {"maxLength": 3}}}, {"k": "hunter2-SECRET"}),
    ({"properties": {"k": {"pattern": "^[0-9]+$"}}}, {"k": "hunter2-SECRET"}),
    ({"additionalProperties": False}, {"hunter2-SECRET": 1}),
    ({"type": "array", "maxItems": 1}, ["hunter2-SECRET", "hunter2-SECRET"]),
    ({"not": {"type": "object"}}, {"a": "hunter2-SECRET"}),
])
def test_messages_never_quote_the_payload(schema, bad):
    message = payload_error({"type": ["object", "array"], **schema}, bad)
    assert message is not None and "hunter2-SECRET" not in message


def test_messages_are_bounded_even_for_huge_payloads_and_long_paths():
    message = payload_error({"properties": {"x" * 5000: {"type": "integer"}}}, {"x" * 5000: "y" * 600_000})
    assert message is not None and len(message) <= MESSAGE_LIMIT and "y" * 50 not in message


def test_deep_payloads_are_refused_with_the_limit_named_without_recursion():
    assert payload_error(None, deep(MAX_DEPTH)) is None
    message = payload_error(None, deep(MAX_DEPTH + 1))
    assert message is not None and f"deeper than {MAX_DEPTH}" in message
    # 100,000 levels: far beyond Python's recursion limit; only an iterative check survives it.
    assert f"{MAX_DEPTH}" in depth_error(deep(100_000))
    assert f"{MAX_DEPTH}" in payload_error({"type": "object"}, deep(100_000))


class NoNetwork:
    def __init__(self):
        self.calls = []

    def __call__(self, *args, **kwargs):
        self.calls.append(args)
        raise AssertionError("network access")


@pytest.mark.parametrize("ref", ["http://127.0.0.1:9/schema.json", "https://example.invalid/s#/x", "other.json",
                                 "urn:uuid:deadbeef-1234-5678-9abc-def012345678"])
def test_remote_refs_are_refused_and_never_fetched(monkeypatch, ref):
    guard = NoNetwork()
    monkeypatch.setattr("urllib.request.urlopen", guard)
    monkeypatch.setattr("socket.create_connection", guard)
    for schema in ({"$ref": ref}, {"properties": {"a": {"items": {"$ref": ref}}}}):
        problem = schema_error(schema)
        assert problem is not None and "is not local" in problem and "nothing is fetched" in problem
        assert payload_error(schema, {"a": [1]}) == problem
    assert guard.calls == []


def test_the_registry_refuses_to_retrieve_even_what_the_static_check_let_through(monkeypatch):
    monkeypatch.setattr(payload_module, "schema_error", lambda schema: None)
    message = payload_error({"$ref": "http://127.0.0.1:9/s.json"}, 1)
    assert message is not None and "cannot be resolved locally" in message


def test_local_refs_work():
    schema = {"$defs": {"n": {"type": "integer"}}, "properties": {"a": {"$ref": "#/$defs/n"}}}
    assert schema_error(schema) is None
    assert payload_error(schema, {"a": 1}) is None
    assert "/a" in payload_error(schema, {"a": "x"})


def test_a_schema_that_refers_to_itself_without_end_is_an_error_not_a_crash():
    message = payload_error({"allOf": [{"$ref": "#"}]}, {})
    assert message is not None and "refers to itself" in message


@pytest.mark.parametrize("schema", [
    {"type": "string", "pattern": "^(a+)+$"},
    {"type": "object", "patternProperties": {"^(a+)+$": {"type": "integer"}}, "additionalProperties": False},
    {"type": "object", "patternProperties": {"^(a|aa)+$": True}, "additionalProperties": {"type": "integer"}},
])
def test_catastrophic_patterns_run_in_linear_time(schema):
    evil = "a" * 5000 + "!"
    payload = evil if schema["type"] == "string" else {evil: "x"}
    started = time.monotonic()
    message = payload_error(schema, payload)
    assert time.monotonic() - started < 1.0
    assert message is not None and evil not in message


def test_patterns_still_match():
    assert payload_error({"type": "string", "pattern": "^[a-z]+-[0-9]{2}$"}, "order-42") is None
    assert payload_error({"patternProperties": {"^x-": {"type": "integer"}}, "additionalProperties": False},
                         {"x-a": 1}) is None


@pytest.mark.parametrize("schema, words", [
    (42, "an object or a boolean, not int"),
    ("{}", "not str"),
    ({"type": 42}, "not a valid JSON Schema"),
    ({"type": "string", "pattern": "(unclosed"}, "RE2"),
    ({"type": "string", "pattern": "(a)\\1"}, "no backreferences"),
    ({"patternProperties": {"^a": True}, "unevaluatedProperties": False}, "unevaluatedProperties"),
    (deep(MAX_DEPTH + 1), f"deeper than {MAX_DEPTH}"),
])
def test_unusable_schemas_are_explained(schema, words):
    problem = schema_error(schema)
    assert problem is not None and words in problem and len(problem) <= MESSAGE_LIMIT


def test_boolean_and_absent_schemas_are_usable():
    assert schema_error(None) is None and schema_error(True) is None and schema_error({}) is None
    assert payload_error(False, 1) is not None and payload_error(True, 1) is None


def test_messages_are_json_safe_one_liners():
    message = payload_error({"properties": {"a\nb": {"type": "integer"}}}, {"a\nb": "x"})
    assert message is not None
    json.dumps(message)


def test_a_payload_key_with_control_characters_is_echoed_as_escapes():
    error = payload_error({"type": "object", "additionalProperties": {"type": "string"}}, {"k\0\x1b[2J\r": 1})
    assert error is not None and "k\\x00\\x1b[2J\\x0d" in error
    assert not any(ord(c) < 32 for c in error)
