"""Reports over finished (and unfinished) runs: tables, NumPy-vs-PyTorch pairs, figures; see ``rnnlab-report``.

``collect_runs(paths)`` loads runs into DataFrames, ``pair_runs(runs, curves)`` pairs the backends, and
``write_report(runs, curves, out)`` writes the report directory. The names load on first use, so that
``rnnlab-report --help`` imports neither pandas nor matplotlib.
"""

from __future__ import annotations

from typing import Any

_EXPORTS = {
    "Collected": "collect",
    "ReportError": "collect",
    "collect_runs": "collect",
    "find_run_dirs": "collect",
    "over_seeds": "seeds",
    "pair_runs": "compare",
    "paired_backends": "seeds",
    "write_report": "render",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        from importlib import import_module

        return getattr(import_module(f"rnnlab.report.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module 'rnnlab.report' has no attribute {name!r}")
