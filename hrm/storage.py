"""One small interface over local paths, `file://` URIs and `s3://bucket/prefix` URIs.

Built on `pyarrow.fs`. S3 endpoint and credentials come from the standard AWS chain
(`AWS_ENDPOINT_URL`, `AWS_ACCESS_KEY_ID`, profiles, …); a URI may also carry pyarrow's
settings as a query, e.g. `s3://bkt/prefix?endpoint_override=http://127.0.0.1:9000&region=us-east-1`.
`pyarrow.fs.FileSystem.from_uri` honours both; a directly constructed `S3FileSystem` would
ignore `AWS_ENDPOINT_URL`, which is why every S3 URI goes through `from_uri`.

Writes are atomic: data goes to a temporary key next to the final one and is then moved
into place (a rename locally, copy + delete on S3), so a reader never sees half an object.

Failures are sorted in one place, `_call` (docs/errors.md): a transient one (connection
refused or reset, timeouts, HTTP 5xx, throttling) is retried with exponential backoff for up
to RETRY_BUDGET_S, then raised as `StorageUnavailable`; every other failure caused by the URI
(missing key or bucket, access denied, bad settings) is an `InputError` naming the URI, at once.
Whole operations are retried (a read from its start, a write of bytes in memory from its
temporary key); a write streamed from a generator has its opening and its final move retried.

An object's `version` names its current bytes without reading them: the ETag (and version
id, where the bucket keeps versions) on object storage, size and modification time in
nanoseconds on a local disk. Any rewrite changes it, which is how a run tells that a file it
planned with has changed under it.

Code that needs a real file (torch's checkpoint loading) asks `local_copy`, which returns a
local path as it is and downloads a remote object once per node into a cache keyed by its
version.
"""

from __future__ import annotations

import errno
import hashlib
import io
import itertools
import json
import logging
import os
import posixpath
import tempfile
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit, urlunsplit

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from hrm.errors import InputError, StorageUnavailable

READ_CHUNK_BYTES = 8 << 20
RETRY_BUDGET_S = 60.0  # how long a transient storage fault is retried before the command gives up
FIRST_BACKOFF_S, MAX_BACKOFF_S = 0.5, 8.0
# How pyarrow's S3 client (the AWS SDK) and the OS word failures that may pass by themselves.
TRANSIENT_MARKERS = (
    "NETWORK_CONNECTION", "curlCode", "Connection refused", "Connection reset", "timed out", "Timeout",
    "SLOW_DOWN", "SlowDown", "THROTTLING", "Throttling", "SERVICE_UNAVAILABLE", "ServiceUnavailable",
    "INTERNAL_FAILURE", "InternalError", "REQUEST_TIMEOUT", "RequestTimeout", "HTTP response code: 5",
)
log = logging.getLogger(__name__)
T = TypeVar("T")


def is_local(uri: str) -> bool:
    """True for plain paths and `file://` URIs."""
    return "://" not in uri or uri.startswith("file://")


def resolve(uri: str | os.PathLike) -> tuple[pafs.FileSystem, str]:
    """The filesystem holding `uri` and the path of `uri` inside it."""
    uri = os.fspath(uri)
    if "://" not in uri:
        return pafs.LocalFileSystem(), os.path.abspath(uri)
    try:
        return pafs.FileSystem.from_uri(uri)
    except (pa.ArrowException, OSError) as err:
        raise InputError(f"{uri}: cannot open this storage location: {err}") from None


def join(uri: str | os.PathLike, *parts: str) -> str:
    """`uri` with `parts` appended to its path; query settings of the URI are kept."""
    uri = os.fspath(uri)
    if "://" not in uri:
        return posixpath.join(uri, *parts)
    scheme, netloc, path, query, fragment = urlsplit(uri)
    path = "/".join([path.rstrip("/"), *(part.strip("/") for part in parts)])
    return urlunsplit((scheme, netloc, path, query, fragment))


def sibling(uri: str, name: str) -> str:
    """The object `name` in the same directory as `uri` (keeping an s3 URI's ?settings)."""
    base, sep, query = uri.partition("?")
    return posixpath.join(posixpath.dirname(base), name) + sep + query


def parent(uri: str) -> str:
    """The directory holding `uri`, without the URI's ?settings."""
    return posixpath.dirname(uri.partition("?")[0].rstrip("/"))


def basename(uri: str) -> str:
    """The last path component of `uri`, without the URI's ?settings."""
    return posixpath.basename(uri.partition("?")[0].rstrip("/"))


def _missing_bucket(uri: str, fs: pafs.FileSystem, path: str) -> InputError | None:
    if isinstance(fs, pafs.S3FileSystem):
        bucket = path.split("/", 1)[0]
        if fs.get_file_info(bucket).type == pafs.FileType.NotFound:
            return InputError(f"{uri}: bucket '{bucket}' does not exist or is not accessible")
    return None


def is_transient(err: BaseException) -> bool:
    text = str(err)
    return isinstance(err, (ConnectionError, TimeoutError)) or any(marker in text for marker in TRANSIENT_MARKERS)


def disk_full(uri: str, err: BaseException) -> StorageUnavailable | None:
    """A full disk (or quota) is neither bad input nor a fault that passes by itself within the
    retry budget: the command stops at once, and what it committed stays for the rerun."""
    if isinstance(err, OSError) and (err.errno in (errno.ENOSPC, errno.EDQUOT)
                                     or "No space left on device" in str(err)):
        return StorageUnavailable(f"{uri}: no space left on the device; free some")
    return None


def _call(uri: str, op: Callable[[], T]) -> T:
    """`op()` with its storage failures sorted: transient ones retried (backoff doubling from
    FIRST_BACKOFF_S, for up to RETRY_BUDGET_S) and then StorageUnavailable; a missing object or
    bucket and every other failure caused by the URI an InputError naming it."""
    started, delay = time.monotonic(), FIRST_BACKOFF_S
    while True:
        try:
            return op()
        except FileNotFoundError:
            fs, path = resolve(uri)
            raise _missing_bucket(uri, fs, path) or InputError(f"{uri}: not found") from None
        except (pa.ArrowException, OSError) as err:
            if full := disk_full(uri, err):
                raise full from None
            if not is_transient(err):
                raise InputError(f"{uri}: {err}") from None
            waited = time.monotonic() - started
            if waited + delay > RETRY_BUDGET_S:
                raise StorageUnavailable(f"{uri}: storage unavailable, gave up after {waited:.0f} s of retries: "
                                         f"{str(err).splitlines()[0]}") from None
            log.warning("%s: %s; retrying in %.1f s", uri, str(err).splitlines()[0], delay)
            time.sleep(delay)
            delay = min(2 * delay, MAX_BACKOFF_S)


def exists(uri: str) -> bool:
    """True if an object (not a prefix) exists at `uri`."""
    fs, path = resolve(uri)
    return _call(uri, lambda: fs.get_file_info(path).type == pafs.FileType.File)


def list_files(uri: str) -> list[str]:
    """Sorted paths (relative to `uri`, '/'-separated) of every file below `uri`; [] if none,
    but a missing bucket is an error."""
    fs, path = resolve(uri)
    selector = pafs.FileSelector(path, recursive=True, allow_not_found=True)
    infos = _call(uri, lambda: fs.get_file_info(selector))
    if not infos and (error := _call(uri, lambda: _missing_bucket(uri, fs, path))):
        raise error
    root = path.rstrip("/") + "/"
    return sorted(info.path[len(root):] for info in infos if info.type == pafs.FileType.File)


def open_input_stream(uri: str) -> pa.NativeFile:
    """A sequential reader (no decompression guessed from the name)."""
    fs, path = resolve(uri)
    return _call(uri, lambda: fs.open_input_stream(path, compression=None))


def open_input_file(uri: str) -> pa.NativeFile:
    """A random-access reader: `read_at(nbytes, offset)` fetches only that range (an HTTP range on S3)."""
    fs, path = resolve(uri)
    return _call(uri, lambda: fs.open_input_file(path))


HEADER_BLOCK_BYTES = 1 << 20


class BlockReader(io.RawIOBase):
    """A seekable read-only file over a random-access reader that fetches whole aligned blocks
    and keeps every block it fetched. A parser that makes many small reads close together
    (torch's zip reader walking an archive's directory and its pickle) then costs a few ranged
    requests instead of one per read. Written here because pyarrow's buffering only reads
    forward, and torch's reader seeks to the end and back."""

    def __init__(self, file: pa.NativeFile, block_bytes: int = HEADER_BLOCK_BYTES):
        self._file, self._block, self._size, self._pos = file, block_bytes, file.size(), 0
        self._blocks: dict[int, bytes] = {}

    @property
    def size(self) -> int:
        return self._size

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._pos, io.SEEK_END: self._size}[whence]
        self._pos = max(0, base + offset)
        return self._pos

    def readinto(self, buffer: Any) -> int:
        view = memoryview(buffer).cast("B")
        wanted = min(len(view), max(0, self._size - self._pos))
        done = 0
        while done < wanted:
            index, offset = divmod(self._pos + done, self._block)
            chunk = self._fetch(index)[offset:offset + wanted - done]
            view[done:done + len(chunk)] = chunk
            done += len(chunk)
        self._pos += done
        return done

    def _fetch(self, index: int) -> bytes:
        if index not in self._blocks:
            self._blocks[index] = self._file.read_at(self._block, index * self._block)
        return self._blocks[index]

    def close(self) -> None:
        self._file.close()
        super().close()


def _reading(uri: str, use: Callable[[pa.NativeFile], T], random_access: bool = False) -> T:
    """`use` applied to the object opened for reading (sequentially, or with random access),
    all of it done again from the start on a transient fault."""
    fs, path = resolve(uri)

    def op() -> T:
        opened = fs.open_input_file(path) if random_access else fs.open_input_stream(path, compression=None)
        with opened as file:
            return use(file)

    return _call(uri, op)


def read_bytes(uri: str) -> bytes:
    return _reading(uri, lambda stream: stream.read())


def read_parquet(uri: str, columns: list[str] | None = None) -> pa.Table:
    """A whole Parquet object (or some of its columns)."""
    return _reading(uri, lambda file: pq.read_table(file, columns=columns), random_access=True)


def parquet_metadata(uri: str) -> pq.FileMetaData:
    """A Parquet object's footer: its schema, row groups and their statistics."""
    return _reading(uri, lambda file: pq.ParquetFile(file).metadata, random_access=True)


def _copy(stream: pa.NativeFile, write: Callable[[bytes], Any]) -> None:
    while chunk := stream.read(READ_CHUNK_BYTES):
        write(chunk)


def read_json(uri: str) -> Any:
    try:
        return json.loads(read_bytes(uri))
    except json.JSONDecodeError as err:
        raise InputError(f"{uri}: not valid JSON: line {err.lineno} column {err.colno}: {err.msg}") from None
    except UnicodeDecodeError as err:
        raise InputError(f"{uri}: not valid JSON: byte {err.start} is not UTF-8") from None


def sha256(uri: str) -> str:
    """Hex SHA-256 of the object's bytes, streamed in chunks."""
    def digest(stream: pa.NativeFile) -> str:
        hashed = hashlib.sha256()
        _copy(stream, hashed.update)
        return hashed.hexdigest()

    return _reading(uri, digest)


def default_cache_dir() -> str:
    return os.path.join(tempfile.gettempdir(), "hrm-eval-downloads")


def version(uri: str) -> str:
    """What identifies the object's current bytes, from its metadata alone (a stat, or one
    HEAD request): `etag=…[,version=…]` on object storage, `size=…,mtime_ns=…` locally (also
    for object stores that give no ETag). A rewrite changes it; an unchanged object keeps it."""
    fs, path = resolve(uri)
    if isinstance(fs, pafs.S3FileSystem):
        # Opening the object is its HEAD request (nothing is read); a missing one is "not found".
        metadata = _reading(uri, lambda file: file.metadata(), random_access=True)  # str keys, bytes values
        if "ETag" in metadata:
            etag = metadata["ETag"].decode().strip('"')
            version_id = metadata.get("VersionId", b"").decode()
            return f"etag={etag}" + (f",version={version_id}" if version_id else "")
    info = _call(uri, lambda: fs.get_file_info(path))
    if info.type != pafs.FileType.File:
        raise InputError(f"{uri}: not found" if info.type == pafs.FileType.NotFound else f"{uri}: not a file")
    return f"size={info.size},mtime_ns={info.mtime_ns}"


def local_copy(uri: str, cache_dir: str | None = None) -> Path:
    """A local path holding the object's bytes: the path itself for local URIs; for remote ones
    a download into `cache_dir` (default: a directory under the system's temp dir), shared by
    every process of a node and reused while the object keeps its `version`."""
    fs, path = resolve(uri)
    if isinstance(fs, pafs.LocalFileSystem):
        return Path(path)
    planned = version(uri)
    key = hashlib.sha256(f"{uri}\0{planned}".encode()).hexdigest()[:24]
    target = Path(cache_dir or default_cache_dir()) / key / posixpath.basename(path)
    if target.is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(f"{target.name}.part-{uuid.uuid4().hex}")

    def download(stream: pa.NativeFile) -> None:
        with open(partial, "wb") as out:
            _copy(stream, out.write)

    try:
        _reading(uri, download)
        if version(uri) != planned:  # rewritten mid-download: these bytes must not be cached under `planned`
            raise InputError(f"{uri}: changed while it was being downloaded")
        os.replace(partial, target)  # concurrent downloaders on one node: the last rename wins, same bytes
    finally:
        partial.unlink(missing_ok=True)
    return target


@contextmanager
def atomic_output(uri: str) -> Iterator[pa.NativeFile]:
    """A writable stream whose bytes appear at `uri` only if the block finishes without error."""
    fs, path = resolve(uri)
    temporary = f"{path}.tmp-{uuid.uuid4().hex}"

    def open_temporary() -> pa.NativeFile:
        if isinstance(fs, pafs.LocalFileSystem):
            fs.create_dir(posixpath.dirname(path), recursive=True)
        return fs.open_output_stream(temporary, compression=None)

    stream = _call(uri, open_temporary)
    try:
        with stream:
            yield stream
        _call(uri, lambda: fs.move(temporary, path))  # local: atomic rename; S3: copy to the final key, then delete
    except BaseException as err:
        _delete_quietly(fs, temporary)
        if full := disk_full(uri, err):
            raise full from None
        raise


def write_bytes_atomic(uri: str, data: bytes) -> None:
    def write() -> None:
        with atomic_output(uri) as stream:
            stream.write(data)  # on S3 the upload happens as the stream closes: a fault there is retried whole

    _call(uri, write)


def write_json_atomic(uri: str, obj: Any, *, indent: int | None = None) -> None:
    write_bytes_atomic(uri, json.dumps(obj, indent=indent).encode())


def write_parquet_atomic(uri: str, tables: Iterable[pa.Table], schema: pa.Schema | None = None,
                         compression: str = "zstd") -> None:
    """Write `tables` as one Parquet object, one row group per table, so memory holds one table at a
    time. `schema` defaults to the first table's (then `tables` must not be empty)."""
    tables = iter(tables)
    if schema is None:
        first = next(tables)
        schema, tables = first.schema, itertools.chain([first], tables)
    with atomic_output(uri) as stream, pq.ParquetWriter(stream, schema, compression=compression) as writer:
        for table in tables:
            writer.write_table(table, row_group_size=max(1, table.num_rows))


def delete(uri: str) -> None:
    """Remove one object; a missing one is fine."""
    fs, path = resolve(uri)
    if _call(uri, lambda: fs.get_file_info(path).type == pafs.FileType.File):
        _call(uri, lambda: fs.delete_file(path))


def _delete_quietly(fs: pafs.FileSystem, path: str) -> None:
    # Cleanup after a failed write must not hide the original error.
    try:
        fs.delete_file(path)
    except (pa.ArrowException, OSError):
        pass
