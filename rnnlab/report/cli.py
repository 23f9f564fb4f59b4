"""``rnnlab-report RUN_OR_SWEEP_DIR... --out DIR [--html] [--title T]``; ``out=DIR`` (Hydra style) works too.

Exit codes: 0 written, 2 bad input (missing path, no runs, unsafe --out), with one line on stderr.
"""

from __future__ import annotations

import argparse
import re
import shlex
import sys
from pathlib import Path

KEY_VALUE = re.compile(r"^(out|title|html)=(.*)$", re.DOTALL)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="rnnlab-report",
        description="Report over rnnlab runs: per-run table, NumPy-vs-PyTorch pairs, incomplete or failed runs, "
        "figures. Arguments are run directories or any directory above them (sweeps, outputs/).",
        epilog="Example: rnnlab-report outputs/multiruns/2026-01-01_12-00-00 --out reports/sweep --html "
        "(Hydra style works too: out=reports/sweep html=true title='My sweep')",
    )
    p.add_argument("paths", nargs="+", metavar="DIR", help="run, sweep or outputs directories")
    p.add_argument("--out", default="report", help="report directory, replaced atomically (default: ./report)")
    p.add_argument("--html", action="store_true", help="also write report.html")
    p.add_argument("--title", default="rnnlab report", help="the report's title")
    return p


def _hydra_style(argv: list[str]) -> list[str]:
    """``out=D``, ``title=T``, ``html=true`` -> ``--out D``, ``--title T``, ``--html`` (unless a path of that name
    exists)."""
    converted = []
    for arg in argv:
        match = KEY_VALUE.match(arg)
        if match is None or Path(arg).exists():
            converted.append(arg)
        elif match.group(1) == "html":
            if match.group(2).lower() in ("true", "1", "yes"):
                converted.append("--html")
        else:
            converted += [f"--{match.group(1)}", match.group(2)]
    return converted


def main(argv: list[str] | None = None) -> int:
    raw = list(sys.argv[1:] if argv is None else argv)
    args = parser().parse_args(_hydra_style(raw))
    from rnnlab.report.collect import ReportError, collect_runs
    from rnnlab.report.render import write_report

    try:
        runs, curves = collect_runs(args.paths)
        command = shlex.join(["rnnlab-report", *raw])
        out = write_report(runs, curves, args.out, title=args.title, command=command, html=args.html)
    except ReportError as err:
        print(f"rnnlab-report: error: {err}", file=sys.stderr)
        return 2
    unfinished = int((runs["status"] != "completed").sum())
    print(f"Report: {out / 'README.md'} ({len(runs)} runs, {unfinished} incomplete or failed)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
