"""kubetasks.blobs' configuration (no server needed): what the chart's environment makes of it."""

from __future__ import annotations

from kubetasks.blobs import BlobStore, StorageConfig, from_env

ENV = {"KUBETASKS_STORAGE_URL": "s3://kubetasks/team-b/", "KUBETASKS_STORAGE_ENDPOINT": "http://10.0.0.1:8333",
       "KUBETASKS_STORAGE_REGION": "us-east-1", "KUBETASKS_STORAGE_THRESHOLD": "1024",
       "AWS_ACCESS_KEY_ID": "AKEXAMPLE", "AWS_SECRET_ACCESS_KEY": "s3cr3t-value"}


def test_no_url_no_store():
    assert StorageConfig.from_env({}) is None
    assert from_env({"AWS_ACCESS_KEY_ID": "x"}) is None


def test_the_config_reads_its_own_environment_and_never_prints_the_secret():
    config = StorageConfig.from_env(ENV)
    assert config is not None
    assert (config.url, config.endpoint, config.region, config.threshold) == (
        "s3://kubetasks/team-b", "http://10.0.0.1:8333", "us-east-1", 1024)
    assert config.credentials == {"access_key_id": "AKEXAMPLE", "secret_access_key": "s3cr3t-value"}
    assert "s3cr3t" not in repr(config)


def test_a_plain_http_s3_server_makes_a_store():
    # allow_http among the S3 options made obstore panic (a BaseException) at the first store.
    store = BlobStore(StorageConfig.from_env(ENV))  # type: ignore[arg-type]
    assert store.uri("runs/a/b/payload") == "s3://kubetasks/team-b/runs/a/b/payload"
    assert store.store.prefix == "team-b"


def test_the_filesystem_backend_makes_its_directory(tmp_path):
    store = BlobStore(StorageConfig(url=f"file://{tmp_path}/deep/store"))
    ref = store.put("runs/a/b/payload", b"x")
    assert (tmp_path / "deep/store/runs/a/b/payload").read_bytes() == b"x"
    assert store.get(ref) == b"x"


def test_a_store_error_is_one_line_with_its_cause_and_no_presigned_query():
    from kubetasks.blobs import error_line

    class GenericError(Exception):
        pass

    # obstore's text: the cause is in a debug dump below a first line that only says "error sending request".
    text = ('Generic S3 error: Error performing POST http://192.0.2.2:8333/kubetasks/p/runs/ns/uid/attempt-1/log'
            '?uploads=&X-Amz-Signature=abc in 2.9s, after 10 retries, max_retries: 10, retry_timeout: 180s  - HTTP '
            'error: error sending request\n\nDebug source:\nGeneric {\n  source: ConnectError(\n    "tcp connect error",'
            '\n    Os {\n      code: 111,\n      kind: ConnectionRefused,\n      message: "Connection refused",\n    },\n')
    line = error_line(GenericError(text))
    assert line == ("GenericError: Connection refused: Generic S3 error: Error performing POST http://192.0.2.2:8333/"
                    "kubetasks/p/runs/ns/uid/attempt-1/log in 2.9s, after 10 retries, max_retries: 10, retry_timeout: "
                    "180s  - HTTP error: error sending request")
    assert error_line(GenericError(text), 60) == "GenericError: Connection refused: Generic S3 error: Error p…"
    assert "\n" not in line and "Signature" not in line
    assert len(error_line(GenericError("x" * 1000), 100)) == 100
    assert error_line(ConnectionRefusedError("refused")) == "ConnectionRefusedError: refused"
    closed = ("Generic S3 error: Error performing PUT http://s3/x in 1s - HTTP error: error sending request\n\n"
              "Debug source:\n  source: hyper::Error(\n    IncompleteMessage,\n  ),")
    assert error_line(GenericError(closed)).startswith("GenericError: connection closed before a response: Generic")
