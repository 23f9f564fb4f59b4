"""The one line a user sees for an error: a bad override, a bad value, a missing or unreadable file, a full disk,
a SLURM job that ended without a result. ``one_line_error`` returns None for anything else (a bug), which keeps
its traceback. Used by the command line (rnnlab.cli) and by the sweep's record of its failed jobs
(rnnlab.runtime.sweeps)."""

from __future__ import annotations

import errno
import re
import sys
from typing import Any


def one_line_error(ex: BaseException) -> str | None:
    """One readable line for a user error (bad override, bad value, bad file), or None for a bug."""
    from hydra.errors import HydraException, MissingConfigException, OverrideParseException
    from omegaconf.errors import OmegaConfBaseException

    from rnnlab.errors import RnnlabError

    # an error raised inside the job arrives as itself; look through wrappers (and through the errors Lightning's
    # teardown raised while handling it) for the user's error
    for seen in _chain(ex):
        if isinstance(seen, RnnlabError):
            return str(seen).splitlines()[0]
    database = _database_error(ex)  # the Optuna sweeper's storage (hydra.sweeper.storage) during a search
    if database is not None:
        return database
    storage = next((e for e in _chain(ex) if isinstance(e, OSError) and e.errno in _STORAGE_ERRNOS), None)
    if storage is not None:
        where = f": {storage.filename}" if storage.filename else ""
        return f"cannot write the run's files: {storage.strerror or storage}{where}"

    from rnnlab.runtime.launchers import (
        submitit_error_line,  # no srun; a job that SLURM killed (hydra/launcher=slurm_*)
    )

    submitit_line = submitit_error_line(ex)
    if submitit_line is not None:
        return submitit_line

    if isinstance(ex, MissingConfigException):
        text = str(ex)
        first = re.sub(r"^In '[^']*': ", "", text.splitlines()[0])
        options = [ln.strip() for ln in text.splitlines() if ln.startswith("\t") and "provider=" not in ln]
        if options:
            group = re.search(r"Available options in '([^']+)'", text)
            where = f" in '{group.group(1)}'" if group else ""
            return f"{first} Available options{where}: {', '.join(options)}"
        return first

    omega = ex if isinstance(ex, OmegaConfBaseException) else ex.__cause__
    if isinstance(omega, OmegaConfBaseException):
        key = getattr(omega, "full_key", None)
        reason = str(omega).splitlines()[0] if str(omega) else type(omega).__name__
        hint = _did_you_mean(omega) if "not in" in reason else ""
        prefix = f"{key}: " if key else ""
        return f"{prefix}{reason}{hint}"
    lexer = "LexerNoViableAltException: "
    if isinstance(ex, OverrideParseException) and not str(ex).startswith(lexer):
        named = _bad_override(sys.argv[1:])
        if named is not None:
            return named
    if isinstance(ex, OverrideParseException) and str(ex).startswith(lexer) and "^" in str(ex):
        # Hydra's "LexerNoViableAltException: key=va|ue" and a caret under the character it cannot read
        caret = str(ex).splitlines()[1].index("^") - len(lexer)
        override = str(ex).splitlines()[0][len(lexer) :]
        bad = override[caret] if 0 <= caret < len(override) else "?"
        return (
            f"cannot parse the override {override!r}: {bad!r} is not allowed in an unquoted value; "
            f"quote it, e.g. {override.partition('=')[0]}='{override.partition('=')[2]}'"
        )
    if isinstance(ex, HydraException):
        return " ".join(str(ex).split())
    return None


_STORAGE_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EFBIG}


def _database_error(ex: BaseException) -> str | None:
    """A SQLAlchemy error (only Optuna's RDB storage uses SQLAlchemy here) in one line, or None. Its opening is
    checked before the search starts (rnnlab.runtime.search); this covers a database that fails during it."""
    if "sqlalchemy" not in sys.modules:
        return None
    from sqlalchemy.exc import SQLAlchemyError

    found = next((e for e in _chain(ex) if isinstance(e, SQLAlchemyError)), None)
    if found is None:
        return None
    text = (str(found).strip() or type(found).__name__).splitlines()[0]
    if "database is locked" in text:  # sqlite waited its 5 s for another worker's write
        text += " (sqlite lets one worker write at a time: fewer workers on it, or a PostgreSQL storage)"
    return f"hydra.sweeper.storage: the Optuna storage failed during the search: {text}"


def _chain(ex: BaseException) -> list[BaseException]:
    """``ex`` and the errors behind it (causes first, then the contexts they were raised in)."""
    out: list[BaseException] = []
    todo: list[BaseException | None] = [ex]
    while todo:
        err = todo.pop(0)
        if err is None or any(err is seen for seen in out):
            continue
        out.append(err)
        todo += [err.__cause__, err.__context__]
    return out


def _bad_override(argv: list[str]) -> str | None:
    """The first command-line override that Hydra's grammar cannot parse, with a quoted form that it can."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    parser = OverridesParser.create()
    for arg in argv:
        if arg.startswith("-") or "=" not in arg:
            continue
        try:
            parser.parse_overrides([arg])
        except Exception:
            key, _, value = arg.partition("=")
            return f"cannot parse the override {arg!r}: quote the value, e.g. {key}='{value}'"
    return None


def _did_you_mean(err: Any) -> str:
    """' (did you mean hidden_size?)' for a misspelt key of a typed config, else ''."""
    import dataclasses
    import difflib

    schema, key = getattr(err, "object_type", None), getattr(err, "key", None)
    if not (dataclasses.is_dataclass(schema) and isinstance(key, str)):
        return ""
    names = [f.name for f in dataclasses.fields(schema)]
    close = difflib.get_close_matches(key, names, n=1)
    return f" (did you mean {close[0]}?)" if close else f" (valid keys: {', '.join(names)})"
