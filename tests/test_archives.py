"""Safe archive extraction: escapes, links, special files, caps, atomicity, root stripping."""

from __future__ import annotations

import io
import stat
import tarfile
import tempfile
import zipfile
from collections.abc import Callable
from pathlib import Path

import pytest

from app.archives import iter_entries, safe_extract
from app.errors import Invalid, TooLarge

MB = 1024 * 1024


def _tar(path: Path, members: list[tuple[tarfile.TarInfo, bytes | None]]) -> Path:
    with tarfile.open(path, "w:gz") as tf:
        for info, data in members:
            if data is not None:
                info.size = len(data)
            tf.addfile(info, io.BytesIO(data) if data is not None else None)
    return path


def _file(name: str, data: bytes = b"x", mode: int = 0o644) -> tuple[tarfile.TarInfo, bytes]:
    info = tarfile.TarInfo(name)
    info.mode = mode
    return info, data


def _special(name: str, kind: bytes, linkname: str = "") -> tuple[tarfile.TarInfo, None]:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.linkname = linkname
    return info, None


def _zip(path: Path, members: list[tuple[str | zipfile.ZipInfo, bytes]]) -> Path:
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for name, data in members:
            zf.writestr(name, data)
    return path


def _zip_link(name: str, target: str) -> zipfile.ZipInfo:
    info = zipfile.ZipInfo(name)
    info.external_attr = (stat.S_IFLNK | 0o777) << 16
    return info


def _left_behind(parent: Path) -> list[str]:
    return sorted(p.name for p in parent.iterdir() if p.name != "archive")


def _extract(archive: Path, **caps: int) -> Path:
    dest = archive.parent / "out"
    safe_extract(archive, dest, max_bytes=caps.get("max_bytes", 10 * MB),
                 max_files=caps.get("max_files", 100))
    return dest


BAD_TAR: dict[str, Callable[[], list[tuple[tarfile.TarInfo, bytes | None]]]] = {
    "'..' would escape": lambda: [_file("ok.txt"), _file("../evil")],
    "'..' would escape (nested)": lambda: [_file("a/../../evil")],
    "absolute paths": lambda: [_file("/etc/evil")],
    "absolute paths (drive)": lambda: [_file("C:/evil")],
    "symbolic links": lambda: [_file("a.txt"), _special("link", tarfile.SYMTYPE, "/etc/passwd")],
    "hard links": lambda: [_file("a.txt"), _special("hard", tarfile.LNKTYPE, "a.txt")],
    "special files (fifo)": lambda: [_special("pipe", tarfile.FIFOTYPE)],
    "special files (device)": lambda: [_special("dev", tarfile.CHRTYPE)],
}


@pytest.mark.parametrize("why", sorted(BAD_TAR))
def test_unsafe_tar_entries_are_refused_and_nothing_is_left(tmp_path: Path, why: str) -> None:
    (tmp_path / "archive").mkdir()
    archive = _tar(tmp_path / "archive" / "bad.tar.gz", BAD_TAR[why]())
    with pytest.raises(Invalid) as caught:
        _extract(archive)
    assert why.split(" (")[0].rstrip("s") in caught.value.detail
    assert caught.value.fields and caught.value.fields[0]["field"] == "archive"
    assert _left_behind(tmp_path) == []
    assert not (tmp_path / "evil").exists()


BAD_ZIP: dict[str, list[tuple[str | zipfile.ZipInfo, bytes]]] = {
    "'..' would escape": [("ok.txt", b"x"), ("../evil", b"x")],
    "'..' would escape (backslash)": [("..\\evil", b"x")],
    "absolute paths": [("/tmp/evil", b"x")],
    "absolute paths (drive)": [("C:\\evil", b"x")],
    "symbolic links": [("a.txt", b"x"), (_zip_link("link", "/etc/passwd"), b"/etc/passwd")],
}


@pytest.mark.parametrize("why", sorted(BAD_ZIP))
def test_unsafe_zip_entries_are_refused_and_nothing_is_left(tmp_path: Path, why: str) -> None:
    (tmp_path / "archive").mkdir()
    archive = _zip(tmp_path / "archive" / "bad.zip", BAD_ZIP[why])
    with pytest.raises(Invalid) as caught:
        _extract(archive)
    assert why.split(" (")[0].rstrip("s") in caught.value.detail
    assert _left_behind(tmp_path) == []
    assert not (tmp_path / "evil").exists()


def test_too_many_files_names_the_limit(tmp_path: Path) -> None:
    (tmp_path / "archive").mkdir()
    archive = _zip(tmp_path / "archive" / "many.zip", [(f"f{i}.txt", b"x") for i in range(11)])
    with pytest.raises(TooLarge, match="more than 10 entries"):
        _extract(archive, max_files=10)
    assert _left_behind(tmp_path) == []
    assert _extract(archive, max_files=11).joinpath("f10.txt").read_bytes() == b"x"


@pytest.mark.parametrize("kind", ["zip", "tar.gz"])
def test_compressed_bomb_is_refused(tmp_path: Path, kind: str) -> None:
    (tmp_path / "archive").mkdir()
    zeros = bytes(20 * MB)
    if kind == "zip":
        archive = _zip(tmp_path / "archive" / "bomb.zip", [("small.txt", b"ok"),
                                                           ("zeros.bin", zeros)])
    else:
        archive = _tar(tmp_path / "archive" / "bomb.tar.gz", [_file("small.txt", b"ok"),
                                                              _file("zeros.bin", zeros)])
    assert archive.stat().st_size < 200_000
    with pytest.raises(TooLarge) as caught:
        _extract(archive, max_bytes=MB)
    assert "zeros.bin" in caught.value.detail and str(MB) in caught.value.detail
    assert _left_behind(tmp_path) == []


def test_bytes_are_counted_across_entries_while_reading(tmp_path: Path) -> None:
    (tmp_path / "archive").mkdir()
    archive = _tar(tmp_path / "archive" / "parts.tar.gz",
                   [_file(f"part{i}.bin", bytes(300_000)) for i in range(4)])
    with pytest.raises(TooLarge, match=r"part3\.bin"):
        _extract(archive, max_bytes=MB)
    assert _extract(archive, max_bytes=2 * MB).joinpath("part3.bin").stat().st_size == 300_000


def test_zip_made_with_a_root_folder_lands_without_it(tmp_path: Path) -> None:
    src = tmp_path / "repo"
    (src / "train" / "train_dir").mkdir(parents=True)
    (src / "train" / "config.json").write_text("{}")
    (src / "train" / "train_dir" / "train.py").write_text("print(1)\n")
    (src / "run.sh").write_text("#!/bin/sh\n")
    (src / "run.sh").chmod(0o755)
    (tmp_path / "archive").mkdir()
    archive = tmp_path / "archive" / "repo.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        for path in sorted(src.rglob("*")):
            zf.write(path, path.relative_to(tmp_path).as_posix())
        zf.writestr("__MACOSX/repo/._run.sh", b"resource fork")
    stats = safe_extract(archive, tmp_path / "out", max_bytes=MB, max_files=20)
    out = tmp_path / "out"
    assert stats.stripped_root == "repo" and stats.files == 3
    assert (out / "train" / "train_dir" / "train.py").read_text() == "print(1)\n"
    assert (out / "run.sh").stat().st_mode & 0o111
    assert not (out / "train" / "config.json").stat().st_mode & 0o111
    assert _left_behind(tmp_path) == ["out", "repo"]


def test_several_top_level_entries_are_kept_and_stripping_can_be_disabled(tmp_path: Path) -> None:
    (tmp_path / "archive").mkdir()
    archive = _tar(tmp_path / "archive" / "a.tar.gz", [_file("./one/a.txt"), _file("two.txt")])
    stats = safe_extract(archive, tmp_path / "out", max_bytes=MB, max_files=10)
    assert stats.stripped_root is None
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["one", "two.txt"]
    single = _tar(tmp_path / "archive" / "b.tar", [_file("root/a.txt")])
    safe_extract(single, tmp_path / "kept", max_bytes=MB, max_files=10, strip_single_root=False)
    assert (tmp_path / "kept" / "root" / "a.txt").is_file()


def test_formats_are_detected_by_content_not_name(tmp_path: Path) -> None:
    zip_named_tgz = _zip(tmp_path / "really-a-zip.tar.gz", [("a.txt", b"zip")])
    assert _extract(zip_named_tgz).joinpath("a.txt").read_bytes() == b"zip"
    plain = tmp_path / "x" / "plain.zip"
    plain.parent.mkdir()
    with tarfile.open(plain, "w") as tf:  # an uncompressed tar named .zip
        info, data = _file("b.txt", b"tar")
        info.size = len(data)
        tf.addfile(info, io.BytesIO(data))
    assert _extract(plain).joinpath("b.txt").read_bytes() == b"tar"


@pytest.mark.parametrize("content", [b"", b"just some text\n" * 100, b"\x1f\x8b\x08 broken"])
def test_anything_else_is_refused_naming_the_formats(tmp_path: Path, content: bytes) -> None:
    (tmp_path / "archive").mkdir()
    bogus = tmp_path / "archive" / "upload.zip"
    bogus.write_bytes(content)
    with pytest.raises(Invalid, match=r"\.zip, \.tar, \.tar\.gz"):
        _extract(bogus)
    assert _left_behind(tmp_path) == []


def test_truncated_archive_is_refused(tmp_path: Path) -> None:
    (tmp_path / "archive").mkdir()
    whole = _tar(tmp_path / "whole.tar.gz", [_file(f"f{i}", bytes(range(256)) * 400)
                                              for i in range(5)])
    cut = tmp_path / "archive" / "cut.tar.gz"
    cut.write_bytes(whole.read_bytes()[: whole.stat().st_size // 2])
    with pytest.raises(Invalid, match="damaged archive"):
        _extract(cut)
    assert _left_behind(tmp_path) == ["whole.tar.gz"]


def test_file_and_folder_with_the_same_name_are_refused(tmp_path: Path) -> None:
    (tmp_path / "archive").mkdir()
    archive = _tar(tmp_path / "archive" / "c.tar", [_file("a"), _file("a/b")])
    with pytest.raises(Invalid, match="conflicts"):
        _extract(archive)
    assert _left_behind(tmp_path) == []


def test_existing_destination_is_never_overwritten(tmp_path: Path) -> None:
    archive = _zip(tmp_path / "a.zip", [("a.txt", b"new")])
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "a.txt").write_bytes(b"old")
    with pytest.raises(FileExistsError):
        safe_extract(archive, tmp_path / "out", max_bytes=MB, max_files=10)
    assert (tmp_path / "out" / "a.txt").read_bytes() == b"old"


def test_upload_file_object_is_accepted_and_saved_with_a_cap(tmp_path: Path) -> None:
    payload = io.BytesIO()
    with zipfile.ZipFile(payload, "w") as zf:
        zf.writestr("repo/a.txt", b"spooled")
    with tempfile.SpooledTemporaryFile(max_size=1024) as upload:
        upload.write(payload.getvalue())
        upload.seek(100)  # extraction rewinds: the HTTP layer may have read part of it
        stats = safe_extract(upload, tmp_path / "out", max_bytes=MB, max_files=10)
        assert stats.stripped_root == "repo"
        assert (tmp_path / "out" / "a.txt").read_bytes() == b"spooled"


def test_entries_stream_without_touching_the_disk(tmp_path: Path) -> None:
    archive = _tar(tmp_path / "s.tar.gz", [_file("d/a.txt", b"alpha"), _file("d/b.txt", b"beta")])
    seen = {str(e.path): e.read_bytes() for e in iter_entries(archive, max_bytes=MB,
                                                               max_files=10) if not e.is_dir}
    assert seen == {"d/a.txt": b"alpha", "d/b.txt": b"beta"}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s.tar.gz"]
