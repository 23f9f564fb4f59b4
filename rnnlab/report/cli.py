"""``rnnlab-report DIR... [out=DIR] [html=true] [title=T]``: key=value arguments, as rnnlab-train and
rnnlab-generate take them.

The flags of earlier releases (``--out DIR``, ``--html``, ``--title T``) still work for this release; each use
prints one line on stderr naming its key=value spelling.

Exit codes: 0 written, 2 bad input (missing path, no runs, unsafe out=, a bad argument), with one line on stderr.
"""

from __future__ import annotations

import shlex
import sys
from pathlib import Path
from typing import Any

KEYS: dict[str, tuple[Any, str]] = {
    "out": ("report", "report directory, replaced atomically"),
    "html": (False, "true: also write report.html"),
    "title": ("rnnlab report", "the report's title"),
}
USAGE = "usage: rnnlab-report DIR... [out=DIR] [html=true] [title=T]"
EXAMPLE = "rnnlab-report outputs/multiruns/2026-01-01_12-00-00 out=reports/sweep html=true title='My sweep'"
TRUE, FALSE = ("true", "1", "yes", "on"), ("false", "0", "no", "off")
_OLD_FLAGS = {"--out": "out", "--title": "title", "--html": "html"}  # deprecated: key=value replaces them


class UsageError(Exception):
    """A bad argument: one line on stderr, exit status 2."""


def help_text() -> str:
    lines = [
        USAGE,
        "",
        "Report over rnnlab runs: per-run table, NumPy-vs-PyTorch pairs, mean, sd and 95 % interval over seeds,",
        "the backends paired by seed, incomplete or failed runs, figures.",
        "",
        "arguments:",
        "  DIR          run, sweep or outputs directories (any directory above runs)",
    ]
    for key, (default, text) in KEYS.items():
        shown = "true or false" if isinstance(default, bool) else repr(default)
        lines.append(f"  {key + '=':<12} {text} (default: {shown})")
    return "\n".join([*lines, "", f"example: {EXAMPLE}"])


def _flag_value(key: str, value: str) -> Any:
    if key != "html":
        if not value:
            raise UsageError(f"{key}= needs a value")
        return value
    if value.lower() in TRUE:
        return True
    if value.lower() in FALSE:
        return False
    raise UsageError(f"html must be true or false, got {value!r}")


def parse(argv: list[str]) -> tuple[list[str], dict[str, Any]]:
    """(the directories, the settings) of rnnlab-report's arguments. ``out=``, ``html=`` and ``title=`` are
    settings unless a path of that name exists; anything else is a directory. The deprecated flags are accepted,
    each with one line on stderr."""
    paths: list[str] = []
    values = {key: default for key, (default, _) in KEYS.items()}
    args = list(argv)
    while args:
        arg = args.pop(0)
        if arg == "--":
            paths += args
            break
        key, sep, value = arg.partition("=")
        if sep and key in KEYS and not Path(arg).exists():
            values[key] = _flag_value(key, value)
        elif key in _OLD_FLAGS or arg in _OLD_FLAGS:
            name = _OLD_FLAGS[key]
            if name == "html":
                if sep:
                    raise UsageError("--html takes no value; write html=true")
                values["html"] = True
            else:
                if not sep:
                    if not args:
                        raise UsageError(f"{key} needs a value; write {name}=...")
                    value = args.pop(0)
                values[name] = _flag_value(name, value)
            spelling = "html=true" if name == "html" else f"{name}={shlex.quote(value)}"
            print(f"rnnlab-report: {key} is deprecated and goes in the next release; write {spelling}", file=sys.stderr)
        elif arg.startswith("-") and not Path(arg).exists():
            raise UsageError(f"unknown option {arg!r} ({USAGE})")
        else:
            paths.append(arg)
    if not paths:
        raise UsageError(f"no directories given ({USAGE})")
    return paths, values


def main(argv: list[str] | None = None) -> int:
    raw = list(sys.argv[1:] if argv is None else argv)
    if any(a in ("-h", "--help") for a in raw):
        print(help_text())
        return 0
    try:
        paths, values = parse(raw)
    except UsageError as err:
        print(f"rnnlab-report: error: {err}", file=sys.stderr)
        return 2
    from rnnlab.report.collect import ReportError, collect_runs
    from rnnlab.report.render import write_report

    try:
        runs, curves = collect_runs(paths)
        command = shlex.join(["rnnlab-report", *raw])
        out = write_report(runs, curves, values["out"], title=values["title"], command=command, html=values["html"])
    except ReportError as err:
        print(f"rnnlab-report: error: {err}", file=sys.stderr)
        return 2
    unfinished = int((runs["status"] != "completed").sum())
    print(f"Report: {out / 'README.md'} ({len(runs)} runs, {unfinished} incomplete or failed)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
