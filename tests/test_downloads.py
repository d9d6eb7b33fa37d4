"""Resumable output downloads: one byte range of the checked descriptor (206), 416 past the end,
If-Range, and the user-content headers on every answer."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient

from app import storage
from app.byte_ranges import ByteRange, RangeNotSatisfiable, parse_range
from app.headers import USER_CONTENT_CSP
from tests.inproc import in_process_api
from tests.repo_files import config, create_repo, submit

DATA = os.urandom(1000)


@pytest.fixture
def api(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[TestClient]:
    with in_process_api(tmp_path, monkeypatch) as client:
        yield client


@pytest.fixture
def output(api: TestClient) -> str:
    """The URL of a 1000-byte output file of a training."""
    created = submit(api, create_repo(api), config("ranges"))
    assert created.status_code == 201, created.text
    tid = created.json()["id"]
    out = storage.training_workspace(tid) / "out"
    out.mkdir(parents=True, exist_ok=True)
    (out / "model.ckpt").write_bytes(DATA)
    (out / "empty.bin").write_bytes(b"")
    return f"/api/v1/trainings/{tid}/outputs/out/model.ckpt"


def _user_content(r: httpx.Response) -> None:
    assert r.headers["x-content-type-options"] == "nosniff"
    assert r.headers["content-security-policy"] == USER_CONTENT_CSP


def test_whole_file_advertises_ranges(api: TestClient, output: str) -> None:
    r = api.get(output)
    assert r.status_code == 200 and r.content == DATA
    assert r.headers["accept-ranges"] == "bytes" and r.headers["content-length"] == "1000"
    assert r.headers["content-disposition"] == "attachment; filename*=utf-8''model.ckpt"
    assert r.headers["etag"].startswith('"') and r.headers["last-modified"].endswith("GMT")
    assert "content-range" not in r.headers
    _user_content(r)


@pytest.mark.parametrize(("header", "start", "end"), [
    ("bytes=10-19", 10, 19), ("bytes=990-", 990, 999), ("bytes=-5", 995, 999),
    ("bytes=-5000", 0, 999), ("bytes=5-999999", 5, 999), ("bytes=0-0", 0, 0),
    ("BYTES = 7 - 8", 7, 8), ("bytes=999-99999999999999999999999", 999, 999),
])
def test_one_range_is_a_206(api: TestClient, output: str, header: str, start: int,
                            end: int) -> None:
    r = api.get(output, headers={"Range": header})
    assert r.status_code == 206, r.text
    assert r.content == DATA[start:end + 1]
    assert r.headers["content-range"] == f"bytes {start}-{end}/1000"
    assert r.headers["content-length"] == str(end - start + 1)
    assert r.headers["content-disposition"].startswith("attachment;")
    assert r.headers["content-type"] == "application/octet-stream"
    _user_content(r)


@pytest.mark.parametrize("header", ["bytes=1000-", "bytes=5000-6000", "bytes=-0",
                                    "bytes=99999999999999999999999-"])
def test_a_range_past_the_end_is_a_416(api: TestClient, output: str, header: str) -> None:
    r = api.get(output, headers={"Range": header})
    assert r.status_code == 416, r.text
    assert r.headers["content-range"] == "bytes */1000"
    assert r.json()["error"] == "range_not_satisfiable" and "1000 bytes" in r.json()["detail"]
    _user_content(r)
    empty = api.get(output.replace("model.ckpt", "empty.bin"), headers={"Range": "bytes=0-"})
    assert empty.status_code == 416 and empty.headers["content-range"] == "bytes */0"


@pytest.mark.parametrize("header", ["bytes=0-1,5-6", "items=0-5", "bytes=5-1", "bytes=x-",
                                    "bytes=", "bytes=--1", "0-5", "bytes=١-٢"])
def test_several_or_malformed_ranges_get_the_whole_file(api: TestClient, output: str,
                                                        header: str) -> None:
    r = api.get(output, headers={"Range": header.encode()})  # type: ignore[dict-item]
    assert r.status_code == 200 and r.content == DATA
    assert "content-range" not in r.headers


def test_if_range_resumes_only_the_same_file(api: TestClient, output: str) -> None:
    first = api.get(output)
    etag, modified = first.headers["etag"], first.headers["last-modified"]
    for validator in (etag, modified):
        r = api.get(output, headers={"Range": "bytes=500-", "If-Range": validator})
        assert r.status_code == 206 and r.content == DATA[500:], validator
    for stale in ('"other"', f"W/{etag}", "Mon, 01 Jan 2001 00:00:00 GMT"):
        r = api.get(output, headers={"Range": "bytes=500-", "If-Range": stale})
        assert r.status_code == 200 and r.content == DATA, stale

    # The run replaced the file: the old ETag no longer matches, the whole new file comes.
    path = storage.training_workspace(int(output.split("/")[4])) / "out" / "model.ckpt"
    fresh = path.with_name("new.tmp")
    fresh.write_bytes(b"new weights")
    fresh.replace(path)
    r = api.get(output, headers={"Range": "bytes=500-", "If-Range": etag})
    assert r.status_code == 200 and r.content == b"new weights"
    assert r.headers["etag"] != etag
    # A stale If-Range never turns a range past the new end into a 416.
    assert api.get(output, headers={"Range": "bytes=900-", "If-Range": etag}).status_code == 200


def test_folders_and_planted_links_ignore_the_range(api: TestClient, output: str) -> None:
    folder = output.removesuffix("/model.ckpt")
    r = api.get(folder, headers={"Range": "bytes=0-3"})
    assert r.status_code == 200 and r.headers["content-type"] == "application/gzip"
    assert r.content[:2] == b"\x1f\x8b"
    path = storage.training_workspace(int(output.split("/")[4])) / "out"
    (path / "link.ckpt").symlink_to(path / "model.ckpt")
    r = api.get(f"{folder}/link.ckpt", headers={"Range": "bytes=0-3"})
    assert r.status_code == 422 and r.json()["error"] == "unsafe_path"


def test_parse_range_without_http() -> None:
    assert parse_range(None, 10) is None
    assert parse_range("bytes=2-", 10) == ByteRange(2, 9)
    assert parse_range("bytes=-3", 10) == ByteRange(7, 9)
    assert parse_range("bytes=-3", 2) == ByteRange(0, 1)
    with pytest.raises(RangeNotSatisfiable):
        parse_range("bytes=0-", 0)
