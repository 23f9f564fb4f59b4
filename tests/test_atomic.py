"""rnnlab.atomic, the one writer: a file or a directory appears whole or not at all, and an exclusive create has
exactly one winner."""

from __future__ import annotations

import json
import os
import threading

import pytest

from rnnlab import atomic

pytestmark = pytest.mark.unit


class Boom(Exception):
    pass


def test_atomic_file_replaces_whole_or_leaves_the_old_file(tmp_path):
    target = tmp_path / "sub" / "f.txt"
    atomic.write_text(target, "first")
    assert target.read_text() == "first"

    def fail_half_way() -> None:
        with atomic.atomic_file(target, "w") as fh:
            fh.write("half of the second")
            raise Boom

    with pytest.raises(Boom):
        fail_half_way()
    assert target.read_text() == "first"
    assert sorted(p.name for p in target.parent.iterdir()) == ["f.txt"]  # no temporary file left
    with atomic.atomic_file(target, "wb", durable=True) as fh:
        fh.write(b"second")
    assert target.read_bytes() == b"second"
    umask = os.umask(0)
    os.umask(umask)
    assert target.stat().st_mode & 0o777 == 0o666 & ~umask  # not mkstemp's 0600


def test_write_json_writes_non_finite_numbers_as_null(tmp_path):
    atomic.write_json(tmp_path / "s.json", {"a": float("nan"), "b": [1.5, float("inf")], "c": "x"})
    assert json.loads((tmp_path / "s.json").read_text()) == {"a": None, "b": [1.5, None], "c": "x"}


def test_place_links_or_copies_and_never_leaves_a_partial_file(tmp_path):
    source = tmp_path / "a" / "last.ckpt"
    source.parent.mkdir()
    source.write_bytes(b"weights")
    target = atomic.place(source, tmp_path / "b" / "last.ckpt")
    assert target.read_bytes() == b"weights"
    assert target.stat().st_ino == source.stat().st_ino  # a hard link on one file system: no bytes copied
    assert atomic.place(target, target) == target  # onto itself: nothing to do
    with pytest.raises(FileNotFoundError):
        atomic.place(tmp_path / "missing", tmp_path / "b" / "other")
    assert sorted(p.name for p in target.parent.iterdir()) == ["last.ckpt"]


def test_create_exclusive_has_exactly_one_winner(tmp_path):
    path = tmp_path / ".owner.json"
    results: list[bool] = []
    barrier = threading.Barrier(8)

    def claim(i: int) -> None:
        barrier.wait()
        results.append(atomic.create_exclusive(path, json.dumps({"who": i})))

    threads = [threading.Thread(target=claim, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(results) == [False] * 7 + [True]
    assert json.loads(path.read_text())["who"] in range(8)  # whole content, never empty
    assert atomic.create_exclusive(path, "again") is False
    assert [p.name for p in tmp_path.iterdir()] == [".owner.json"]


def test_replace_dir_swaps_in_a_complete_directory_or_keeps_the_old_one(tmp_path):
    out = tmp_path / "report"
    with atomic.replace_dir(out) as tmp:
        (tmp / "README.md").write_text("one")
    assert (out / "README.md").read_text() == "one"

    def fail_half_way() -> None:
        with atomic.replace_dir(out) as tmp:
            (tmp / "README.md").write_text("two, half written")
            raise Boom

    with pytest.raises(Boom):
        fail_half_way()
    assert (out / "README.md").read_text() == "one"
    with atomic.replace_dir(out) as tmp:
        (tmp / "other.md").write_text("three")
    assert sorted(p.name for p in out.iterdir()) == ["other.md"]  # the old content is gone, not merged
    assert [p.name for p in tmp_path.iterdir()] == ["report"]  # no temporary or old directory left
