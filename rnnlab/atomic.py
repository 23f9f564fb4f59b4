"""Files that appear whole or not at all: write a temporary sibling, then rename it over the target."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any


@contextmanager
def atomic_file(target: str | os.PathLike[str], mode: str = "wb", **open_kwargs: Any) -> Iterator[IO[Any]]:
    """``with atomic_file(path) as fh: ...`` writes into a temporary file next to ``path`` and renames it over
    ``path`` when the block ends without an error; on an error the temporary file is removed and ``path`` is left
    as it was. The file gets the permissions of an ordinary new file (mkstemp would leave it 0600)."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, mode, **open_kwargs) as fh:
            yield fh
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


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

    text = json.dumps(finite_json(content), indent=2, allow_nan=False) + "\n"
    with atomic_file(target, "w", encoding="utf-8") as fh:
        fh.write(text)
