"""Whether a payload can reach its task: as a file up to the limit, else from the TaskRun."""

import json

from kubetasks import protocol
from kubetasks.core.payload import payload_data, payload_delivery_error, payload_file_text

LIMIT = protocol.PAYLOAD_FILE_LIMIT


def string_of_json_size(n: int) -> str:
    return "x" * (n - 2)  # the quotes are the other 2 bytes


def test_the_limit_leaves_room_for_checkpoints_in_the_configmap():
    assert LIMIT == 256 * 1024
    assert LIMIT + protocol.RECORD_LIMIT <= protocol.TOTAL_LIMIT < 1024 * 1024


def test_payloads_up_to_the_limit_are_files():
    at = string_of_json_size(LIMIT)
    assert json.loads(payload_file_text(at)) == at
    assert payload_data(at) == {"payload.json": json.dumps(at)}
    assert payload_file_text(string_of_json_size(LIMIT + 1)) is None
    assert payload_data(string_of_json_size(LIMIT + 1)) == {}


def test_the_size_is_of_compact_utf8_json():
    assert payload_file_text({"a": [1, 2], "b": "é"}) == '{"a":[1,2],"b":"é"}'
    two_byte = "é" * ((LIMIT - 2) // 2)  # 2 bytes each in UTF-8, 6 as an ASCII escape
    assert payload_file_text(two_byte) is not None


def test_commands_are_refused_payloads_over_the_limit_with_a_message_naming_it():
    assert payload_delivery_error(string_of_json_size(LIMIT), uses_runtime=False) is None
    message = payload_delivery_error({"blob": "x" * (1258291 - 11)}, uses_runtime=False)
    assert message is not None
    assert "1258291 bytes of JSON (1.2 MiB)" in message
    assert "at most 262144 bytes (256 KiB)" in message and "`entrypoint`" in message
    assert "262145 bytes of JSON (256 KiB)" in payload_delivery_error(string_of_json_size(LIMIT + 1), uses_runtime=False)


def test_the_runtime_takes_any_payload_the_api_server_accepted():
    assert payload_delivery_error("x" * (3 * 2**20), uses_runtime=True) is None
    assert payload_delivery_error(None, uses_runtime=False) is None
