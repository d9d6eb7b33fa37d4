"""safe_files on real folders: links, hard links and fifos planted by a run are never followed."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from app import safe_files


@pytest.fixture
def planted(tmp_path: Path) -> Path:
    """A workspace whose outputs hold a file, and links and a fifo pointing outside it."""
    secret = tmp_path / "secret.txt"
    secret.write_text("platform secret")
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "elsewhere" / "other.txt").write_text("another user's file")
    ws = tmp_path / "ws"
    (ws / "out" / "sub").mkdir(parents=True)
    (ws / "out" / "model.ckpt").write_bytes(b"weights")
    (ws / "out" / "sub" / "notes.txt").write_text("done")
    (ws / "out" / "link.txt").symlink_to(secret)
    os.link(secret, ws / "out" / "hard.txt")
    (ws / "out" / "dirlink").symlink_to(tmp_path / "elsewhere")
    os.mkfifo(ws / "out" / "pipe")
    (ws / "linked-out").symlink_to(tmp_path / "elsewhere")
    return ws


def test_walk_lists_files_and_refuses_links(planted: Path) -> None:
    nodes = {str(n.path): n for n in safe_files.walk(planted, "out")}
    assert not nodes["out/model.ckpt"].refused and nodes["out/model.ckpt"].size == 7
    assert not nodes["out/sub/notes.txt"].refused
    assert nodes["out/link.txt"].refused == "is a symbolic link"
    assert nodes["out/dirlink"].refused == "is a symbolic link"
    assert "hard link" in (nodes["out/hard.txt"].refused or "")
    assert "special file" in (nodes["out/pipe"].refused or "")
    assert not any(p.startswith("out/dirlink/") for p in nodes)
    with pytest.raises(safe_files.UnsafePath, match="linked-out' is a symbolic link"):
        list(safe_files.walk(planted, "linked-out"))
    with pytest.raises(safe_files.UnsafePath):
        list(safe_files.walk(planted, "linked-out/other"))
    with pytest.raises(safe_files.UnsafePath, match="linked-out' is a symbolic link"):
        list(safe_files.walk(planted / "linked-out"))


def test_open_file_reads_only_regular_singly_linked_files(planted: Path) -> None:
    fd, info = safe_files.open_file(planted, "out/model.ckpt")
    assert b"".join(safe_files.read_chunks(fd)) == b"weights" and info.st_size == 7
    for bad in ("out/link.txt", "out/hard.txt", "out/pipe", "out/dirlink/other.txt",
                "linked-out/other.txt"):
        with pytest.raises(safe_files.UnsafePath) as caught:
            safe_files.open_file(planted, bad)
        assert caught.value.status == 422 and caught.value.fields
    with pytest.raises(FileNotFoundError):
        safe_files.open_file(planted, "out/nope")
    with pytest.raises(ValueError):
        safe_files.open_file(planted, "../secret.txt")


def test_replace_file_never_writes_through_a_link(planted: Path, tmp_path: Path) -> None:
    source = tmp_path / "log.txt"
    source.write_text("the log")
    (planted / "logs").mkdir()
    (planted / "logs" / "job.log").symlink_to(tmp_path / "secret.txt")
    written = safe_files.replace_file(planted, "logs", "job.log", source)
    assert written.read_text() == "the log" and not written.is_symlink()
    assert (tmp_path / "secret.txt").read_text() == "platform secret"
    os.link(tmp_path / "secret.txt", planted / "logs" / "hard.log")
    safe_files.replace_file(planted, "logs", "hard.log", source)
    assert (tmp_path / "secret.txt").read_text() == "platform secret"
    with pytest.raises(safe_files.UnsafePath):
        safe_files.replace_file(planted, "linked-out", "job.log", source)
    assert sorted(p.name for p in (tmp_path / "elsewhere").iterdir()) == ["other.txt"]
    made = safe_files.replace_file(planted, "new/deep", "job.log", source)
    assert made.read_text() == "the log"


def test_check_tree_names_the_first_bad_entry(planted: Path) -> None:
    safe_files.check_tree(planted, "out/sub")
    with pytest.raises(safe_files.UnsafePath, match="out/dirlink"):
        safe_files.check_tree(planted, "out")
