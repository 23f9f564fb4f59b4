"""rnnlab's one way of writing files so that they appear whole or not at all.

Everything a run, a report or a script writes goes through these: a file is written into a temporary sibling and
renamed over its target (``atomic_file``, ``write_text``, ``write_json``, ``place`` for a copy or hard link); a
directory is built beside its target and swapped in (``replace_dir``); a file that must not exist yet is created
by exactly one of any number of concurrent callers (``create_exclusive``). A process killed at any moment leaves
the previous complete version or the new complete one, never a half, and at most a hidden ``.NAME.*.tmp`` file.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import IO, Any


def _sync_dir(directory: Path) -> None:
    """Make a rename in ``directory`` durable (its entry reaches the disk); best effort."""
    with suppress(OSError):
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _ordinary_permissions(path: str | Path, mode: int = 0o666) -> None:
    """What an ordinary new file (or directory, 0o777) gets under the umask; mkstemp/mkdtemp leave 0600/0700."""
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(path, mode & ~umask)


def _tmp_name(target: Path) -> Path:
    return target.with_name(f".{target.name}.{os.getpid()}.{os.urandom(4).hex()}.tmp")


@contextmanager
def atomic_file(
    target: str | os.PathLike[str], mode: str = "wb", *, durable: bool = False, **open_kwargs: Any
) -> Iterator[IO[Any]]:
    """``with atomic_file(path) as fh: ...`` writes into a temporary file next to ``path`` and renames it over
    ``path`` when the block ends without an error; on an error the temporary file is removed and ``path`` is left
    as it was. ``durable``: the content and the rename are flushed to the disk before the block returns
    (checkpoints). The file gets the permissions of an ordinary new file."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, mode, **open_kwargs) as fh:
            yield fh
            if durable:
                fh.flush()
                os.fsync(fh.fileno())
        _ordinary_permissions(tmp)
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    if durable:
        _sync_dir(target.parent)


def write_text(target: str | os.PathLike[str], text: str) -> None:
    """Write ``text`` (UTF-8), whole or not at all."""
    with atomic_file(target, "w", encoding="utf-8") as fh:
        fh.write(text)


def finite_json(value: Any) -> Any:
    """``value`` with every NaN or infinite float replaced by None, so that it is valid JSON (RFC 8259 has no
    NaN or Infinity; Python's json module would write them)."""
    import math

    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: finite_json(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [finite_json(v) for v in value]
    return value


def write_json(target: str | os.PathLike[str], content: Any) -> None:
    """Write ``content`` as JSON (non-finite numbers as null), whole or not at all (:func:`atomic_file`)."""
    import json

    write_text(target, json.dumps(finite_json(content), indent=2, allow_nan=False) + "\n")


def place(source: str | os.PathLike[str], target: str | os.PathLike[str]) -> Path:
    """Put a copy of ``source`` at ``target``, whole or not at all: a hard link where the file system allows one
    (no bytes copied), else a copy. ``target`` itself if it is ``source``."""
    source, target = Path(source), Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    if target.exists() and target.resolve() == source.resolve():
        return target
    tmp = _tmp_name(target)
    try:
        try:
            os.link(source, tmp)
        except OSError:  # another file system, or links not allowed
            shutil.copyfile(source, tmp)
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)
    return target


def create_exclusive(path: str | os.PathLike[str], content: str) -> bool:
    """Create ``path`` holding ``content``, unless it exists (False). Exactly one of any number of concurrent
    callers succeeds, and a reader never sees the file without its content: the content goes into a temporary
    file that is then hard-linked to ``path`` (link(2) fails if ``path`` exists). Where hard links are not
    supported, an O_EXCL create followed by the write (readers must wait for the content)."""
    path = Path(path)
    tmp = _tmp_name(path)
    try:
        with open(tmp, "w") as fh:
            fh.write(content)
            fh.flush()
            os.fsync(fh.fileno())
        try:
            os.link(tmp, path)
            return True
        except FileExistsError:
            return False
        except OSError:  # no hard links on this file system
            pass
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            return False
        with os.fdopen(fd, "w") as fh:
            fh.write(content)
        return True
    finally:
        tmp.unlink(missing_ok=True)


@contextmanager
def replace_dir(out: str | os.PathLike[str]) -> Iterator[Path]:
    """``with replace_dir(out) as tmp: <write into tmp>``: the directory is built beside ``out`` and, when the block
    ends without an error, takes the place of ``out`` (whose previous content is removed); on an error it is
    removed and ``out`` is left as it was. Between the two renames ``out`` is briefly absent, never partial."""
    out = Path(out).absolute()
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent))
    old = out.with_name(f".{out.name}.{os.getpid()}.{os.urandom(4).hex()}.old")
    try:
        yield tmp
        _ordinary_permissions(tmp, 0o777)
        if out.exists():
            os.rename(out, old)
        try:
            os.rename(tmp, out)
        except BaseException:
            if old.exists():
                os.rename(old, out)
            raise
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    shutil.rmtree(old, ignore_errors=True)
