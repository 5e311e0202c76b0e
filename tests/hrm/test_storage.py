import errno
import hashlib
import threading

import boto3
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from moto.server import ThreadedMotoServer

from hrm import storage
from hrm.errors import InputError, StorageUnavailable

from tests.s3server import S3_ENV, start_s3_server


@pytest.fixture(params=["local", pytest.param("s3", marks=pytest.mark.s3)])
def root(request: pytest.FixtureRequest, tmp_path) -> str:
    """A fresh location on local disk or in a bucket of the loopback S3 server."""
    if request.param == "local":
        return str(tmp_path / "root")
    return request.getfixturevalue("s3_bucket") + "/root"


def test_join_appends_parts_and_keeps_the_query_settings_of_an_s3_uri():
    uri = "s3://bkt/pre/?endpoint_override=http://127.0.0.1:9&region=us-east-1"
    assert storage.join(uri, "a", "b.json") == (
        "s3://bkt/pre/a/b.json?endpoint_override=http://127.0.0.1:9&region=us-east-1")
    assert storage.join("/data/x", "a", "b") == "/data/x/a/b"


def test_a_plain_path_and_a_file_uri_name_the_same_file(tmp_path):
    storage.write_bytes_atomic(str(tmp_path / "a" / "x.bin"), b"abc")
    assert storage.read_bytes(f"file://{tmp_path}/a/x.bin") == b"abc"


def test_publishing_leaves_only_the_final_object(root):
    storage.write_json_atomic(storage.join(root, "d", "x.json"), {"k": [1, 2]})
    storage.write_bytes_atomic(storage.join(root, "y.bin"), b"old")
    storage.write_bytes_atomic(storage.join(root, "y.bin"), b"new")
    assert storage.list_files(root) == ["d/x.json", "y.bin"]
    assert storage.read_json(storage.join(root, "d", "x.json")) == {"k": [1, 2]}
    assert storage.read_bytes(storage.join(root, "y.bin")) == b"new"


def test_a_write_that_fails_midway_publishes_nothing(root):
    with pytest.raises(RuntimeError):
        with storage.atomic_output(storage.join(root, "part.bin")) as stream:
            stream.write(b"half of it")
            raise RuntimeError("writer died")
    assert storage.list_files(root) == []
    assert not storage.exists(storage.join(root, "part.bin"))


def test_range_reads_return_only_the_requested_bytes(root):
    data = bytes(range(256)) * 64
    storage.write_bytes_atomic(storage.join(root, "blob"), data)
    with storage.open_input_file(storage.join(root, "blob")) as file:
        assert file.read_at(10, 1000) == data[1000:1010]
    assert storage.sha256(storage.join(root, "blob")) == hashlib.sha256(data).hexdigest()


def test_delete_removes_an_object_and_accepts_a_missing_one(root):
    storage.write_bytes_atomic(storage.join(root, "x"), b"1")
    storage.delete(storage.join(root, "x"))
    storage.delete(storage.join(root, "x"))
    assert storage.list_files(root) == []


def test_reading_a_missing_object_names_its_uri(root):
    missing = storage.join(root, "nope.json")
    with pytest.raises(InputError, match=f"{missing}: not found"):
        storage.read_json(missing)


def test_invalid_json_names_the_file_and_line(root):
    uri = storage.join(root, "bad.json")
    storage.write_bytes_atomic(uri, b'{\n  "a": 1,\n  oops\n}')
    with pytest.raises(InputError, match=r"bad.json: not valid JSON: line 3"):
        storage.read_json(uri)


@pytest.mark.s3
def test_a_missing_bucket_is_named_when_reading_and_listing(s3_endpoint):
    with pytest.raises(InputError, match="s3://no-such-bucket/x/y.json: bucket 'no-such-bucket' does not exist"):
        storage.read_bytes("s3://no-such-bucket/x/y.json")
    with pytest.raises(InputError, match="bucket 'no-such-bucket' does not exist"):
        storage.list_files("s3://no-such-bucket/x")


@pytest.mark.s3
def test_settings_in_the_uri_override_the_environment_endpoint(s3_bucket, s3_endpoint, monkeypatch):
    storage.write_bytes_atomic(f"{s3_bucket}/k", b"v")
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9")  # nothing listens there
    assert storage.read_bytes(f"{s3_bucket}/k?endpoint_override={s3_endpoint}") == b"v"


@pytest.mark.s3
def test_an_endpoint_that_stays_unreachable_is_storage_unavailable_naming_the_uri(s3_endpoint, monkeypatch):
    monkeypatch.setattr(storage, "RETRY_BUDGET_S", 1.0)  # pyarrow's own retries already take seconds per try
    uri = "s3://bkt/data/dataset.json?endpoint_override=http://127.0.0.1:9"
    with pytest.raises(StorageUnavailable, match=r"s3://bkt/data/dataset.json\?endpoint_override=.*gave up.*connect"):
        storage.read_bytes(uri)


def test_parquet_tables_are_published_as_one_object_with_a_row_group_each(root):
    tables = (pa.table({"x": list(range(start, start + 3))}) for start in (0, 3, 6))
    storage.write_parquet_atomic(storage.join(root, "t.parquet"), tables)
    with storage.open_input_file(storage.join(root, "t.parquet")) as file:
        reader = pq.ParquetFile(file)
        assert reader.num_row_groups == 3
        assert reader.read().column("x").to_pylist() == list(range(9))
    assert storage.list_files(root) == ["t.parquet"]


def test_a_version_stays_while_an_object_is_unchanged_and_changes_when_it_is_rewritten(root):
    uri = storage.join(root, "weights")
    storage.write_bytes_atomic(uri, b"first")
    first = storage.version(uri)
    assert storage.version(uri) == first
    storage.write_bytes_atomic(uri, b"other")
    assert storage.version(uri) != first


def test_an_object_version_is_its_etag_read_without_downloading_it(s3_bucket):
    uri = f"{s3_bucket}/weights"
    storage.write_bytes_atomic(uri, b"abc")
    assert storage.version(uri) == f"etag={hashlib.md5(b'abc').hexdigest()}"  # a one-part upload's ETag: its MD5


def test_the_version_of_a_missing_object_names_its_uri(root):
    with pytest.raises(InputError, match="missing: not found"):
        storage.version(storage.join(root, "missing"))


def test_a_download_is_cached_under_the_version_it_had(s3_bucket, tmp_path):
    uri = f"{s3_bucket}/weights"
    storage.write_bytes_atomic(uri, b"first")
    assert storage.local_copy(uri, str(tmp_path)).read_bytes() == b"first"
    storage.write_bytes_atomic(uri, b"second")
    assert storage.local_copy(uri, str(tmp_path)).read_bytes() == b"second"


class CountingFile:
    """The part of a pyarrow random-access file BlockReader uses, counting ranged reads."""

    def __init__(self, data: bytes):
        self.data, self.requests = data, 0

    def size(self) -> int:
        return len(self.data)

    def read_at(self, nbytes: int, offset: int) -> bytes:
        self.requests += 1
        return self.data[offset:offset + nbytes]

    def close(self) -> None:
        pass


def test_a_block_reader_returns_the_bytes_and_serves_small_reads_from_few_requests():
    data = bytes(range(256)) * 40  # 10,240 bytes: 10 blocks of 1024 and a bit
    file = CountingFile(data)
    reader = storage.BlockReader(file, block_bytes=1024)
    assert reader.read(4) == data[:4]
    reader.seek(-30, 2)
    assert reader.read(100) == data[-30:]  # clipped at the end
    reader.seek(1000)
    assert reader.read(50) == data[1000:1050]  # across a block boundary
    for offset in range(0, 1000, 7):  # many small reads inside blocks already fetched
        reader.seek(offset)
        assert reader.read(3) == data[offset:offset + 3]
    assert file.requests == 3  # blocks 0, 1 and the last


class FlakyOperation:
    """Fails with `error` the first `failures` times it is called, then returns "done"."""

    def __init__(self, error: Exception, failures: int):
        self.error, self.failures, self.calls = error, failures, 0

    def __call__(self) -> str:
        self.calls += 1
        if self.calls <= self.failures:
            raise self.error
        return "done"


OUTAGE = OSError("When reading information for key 'k' in bucket 'b': AWS Error NETWORK_CONNECTION during "
                 "HeadObject operation: curlCode: 7, Could not connect to server")


@pytest.fixture
def no_sleep(monkeypatch) -> list[float]:
    """storage's backoff sleeps recorded instead of slept."""
    slept: list[float] = []
    monkeypatch.setattr(storage.time, "sleep", slept.append)
    return slept


def test_a_transient_storage_fault_is_retried_with_doubling_backoff_until_it_passes(no_sleep):
    operation = FlakyOperation(OUTAGE, failures=4)
    assert storage._call("s3://b/k", operation) == "done"
    assert operation.calls == 5 and no_sleep == [0.5, 1.0, 2.0, 4.0]


def test_a_transient_fault_that_outlasts_the_retry_budget_is_storage_unavailable(no_sleep, monkeypatch):
    clock = iter(range(0, 1000, 10))  # every look at the clock: 10 s later
    monkeypatch.setattr(storage.time, "monotonic", lambda: next(clock))
    with pytest.raises(StorageUnavailable, match=r"s3://b/k: storage unavailable, gave up after \d+ s of retries"):
        storage._call("s3://b/k", FlakyOperation(OUTAGE, failures=1000))


@pytest.mark.parametrize("error", [OSError("AWS Error ACCESS_DENIED during HeadObject operation: Access Denied"),
                                   OSError("AWS Error INVALID_ACCESS_KEY_ID during ListObjectsV2 operation")])
def test_a_permanent_storage_fault_is_bad_input_at_once(no_sleep, error):
    operation = FlakyOperation(error, failures=1)
    with pytest.raises(InputError, match="s3://b/k: AWS Error"):
        storage._call("s3://b/k", operation)
    assert operation.calls == 1 and no_sleep == []


def test_a_full_disk_stops_at_once_as_storage_unavailable_and_publishes_nothing(no_sleep, tmp_path):
    full = OSError(errno.ENOSPC, "No space left on device")
    operation = FlakyOperation(full, failures=1)
    with pytest.raises(StorageUnavailable, match=r"^s3://b/k: no space left on the device; free some$"):
        storage._call("s3://b/k", operation)
    assert operation.calls == 1 and no_sleep == []

    def tables_until_the_disk_fills():
        yield pa.table({"x": [1, 2]})
        raise full

    target = str(tmp_path / "out" / "part.parquet")
    with pytest.raises(StorageUnavailable, match=r"part.parquet: no space left on the device; free some$"):
        storage.write_parquet_atomic(target, tables_until_the_disk_fills())
    assert storage.list_files(str(tmp_path / "out")) == []


@pytest.mark.s3
def test_a_read_survives_the_object_store_going_away_for_a_few_seconds(monkeypatch):
    for key, value in S3_ENV.items():
        monkeypatch.setenv(key, value)
    server, endpoint = start_s3_server()
    uri = f"s3://outage/key?endpoint_override={endpoint}&scheme=http"
    boto3.client("s3", endpoint_url=endpoint).create_bucket(Bucket="outage")
    storage.write_bytes_atomic(uri, b"still here")
    host, port = server.get_host_and_port()
    server.stop()
    restart = threading.Timer(3.0, lambda: ThreadedMotoServer(ip_address=host, port=port, verbose=False).start())
    restart.start()
    try:
        assert storage.read_bytes(uri) == b"still here"
    finally:
        restart.join()
