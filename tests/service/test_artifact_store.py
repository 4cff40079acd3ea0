"""service/storage: content addressing, immutability, dedup, atomicity, directories, job scratch areas."""

import hashlib
import io
import os

import pytest

from models.io.atomic import atomic_write
from service.storage import LocalArtifactStore, ObjectNotFound, TooLarge


def _litter(store: LocalArtifactStore) -> list[str]:
    return sorted(p.name for p in (store.root / "tmp").iterdir())


def test_objects_are_named_by_their_sha256_and_stored_once(store, tmp_path):
    sha = store.put_bytes(b"hello")
    assert sha == hashlib.sha256(b"hello").hexdigest()
    assert store.key_of(sha) == f"objects/{sha[:2]}/{sha}"
    (tmp_path / "hello.txt").write_bytes(b"hello")
    assert store.put_file(tmp_path / "hello.txt") == sha  # same bytes, same object: a no-op
    inode = store.path_of(sha).stat().st_ino
    assert store.put_stream(io.BytesIO(b"hello")) == sha and store.path_of(sha).stat().st_ino == inode
    with store.open(sha) as handle:
        assert handle.read() == b"hello"
    assert _litter(store) == [] and len(list((store.root / "objects").rglob("*.*"))) == 0


def test_objects_are_read_only(store):
    path = store.path_of(store.put_bytes(b"weights"))
    assert path.stat().st_mode & 0o222 == 0
    if os.geteuid() != 0:  # root ignores permission bits
        with pytest.raises(PermissionError):
            path.open("wb")


def test_failed_or_oversized_writes_leave_nothing(store):
    class Broken(io.RawIOBase):
        def readinto(self, buffer):
            raise OSError("connection reset")

    with pytest.raises(OSError, match="connection reset"):
        store.put_stream(Broken())
    with pytest.raises(TooLarge, match="larger than the limit of 4 bytes"):
        store.put_stream(io.BytesIO(b"12345"), max_bytes=4)
    assert _litter(store) == [] and list((store.root / "objects").iterdir()) == []
    assert store.put_stream(io.BytesIO(b"1234"), max_bytes=4) == hashlib.sha256(b"1234").hexdigest()


def test_unknown_and_malformed_addresses(store):
    with pytest.raises(ObjectNotFound, match="no object 0{64}"):
        store.path_of("0" * 64)
    assert not store.exists("0" * 64)
    for bad in ("../../etc/passwd", "A" * 64, "abc"):
        with pytest.raises(ValueError, match="not a SHA-256"):
            store.exists(bad)
    with pytest.raises(ValueError, match="not a job id"):
        store.job_dir("../other")


def test_directories_are_addressed_by_a_canonical_manifest(store, tmp_path):
    for name in ("a", "b"):
        (tmp_path / name / "sub").mkdir(parents=True)
        (tmp_path / name / "config.json").write_text("{}", encoding="utf-8")
        (tmp_path / name / "sub" / "w.bin").write_bytes(b"\x00\x01")
    first = store.put_dir(tmp_path / "a")
    assert store.put_dir(tmp_path / "b") == first  # same content, other place and time
    assert store.read_manifest(first) == {"config.json": (hashlib.sha256(b"{}").hexdigest(), 2),
                                          "sub/w.bin": (hashlib.sha256(b"\x00\x01").hexdigest(), 2)}
    checkout = store.checkout_dir(first)
    assert (checkout / "sub" / "w.bin").read_bytes() == b"\x00\x01" and store.checkout_dir(first) == checkout
    (tmp_path / "b" / "config.json").write_text('{"x": 1}', encoding="utf-8")
    assert store.put_dir(tmp_path / "b") != first
    with pytest.raises(ValueError, match="not a directory manifest"):
        store.read_manifest(store.put_bytes(b"plain"))


def test_directories_refuse_links(store, tmp_path):
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "link").symlink_to("/etc/hostname")
    with pytest.raises(ValueError, match="only regular files"):
        store.put_dir(tmp_path / "d")


def test_delete_removes_the_object_and_its_checkout(store, tmp_path):
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "f").write_bytes(b"f")
    sha = store.put_dir(tmp_path / "d")
    checkout = store.checkout_dir(sha)
    assert store.delete(sha) and not store.exists(sha) and not checkout.exists()
    assert store.delete(sha) is False


def test_job_dirs_and_atomic_writes(store):
    job = store.job_dir("3f2a-b")
    assert job == store.root / "jobs" / "3f2a-b" and job.is_dir()
    with atomic_write(job / "report.json", "w") as handle:
        handle.write("complete")
    with pytest.raises(RuntimeError), atomic_write(job / "report.json", "w") as handle:
        handle.write("half")
        raise RuntimeError("worker died")
    assert (job / "report.json").read_text(encoding="utf-8") == "complete"
    assert [p.name for p in job.iterdir()] == ["report.json"]
    store.remove_job_dir("3f2a-b")
    assert not job.exists()


def test_sweep_tmp_removes_only_old_litter(store):
    old, new = store.root / "tmp" / "put.old", store.root / "tmp" / "put.new"
    old.write_bytes(b"x")
    new.write_bytes(b"x")
    os.utime(old, (0, 0))
    assert store.sweep_tmp(max_age_s=3600) == 1 and _litter(store) == ["put.new"]
