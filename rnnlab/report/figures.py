"""The report's PNG figures: learning curves, step-time bars, metric bars, and copies of the runs' own pictures.

matplotlib is imported inside the functions (Agg canvas, no pyplot state). Output is deterministic: fixed size and
dpi, no "Software" metadata, a fixed ``svg.hashsalt``, runs drawn in run order.
"""

from __future__ import annotations

import re
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pandas as pd

DPI = 100
BACKEND_COLORS = {"numpy": "#d95f02", "torch": "#1b9e77"}
OTHER_COLORS = ["#7570b3", "#e7298a", "#66a61e", "#e6ab02", "#a6761d", "#666666"]
CELL_STYLES = {"rnn": "-", "lstm": "--", "gru": ":"}
OTHER_STYLES = ["-.", (0, (5, 1)), (0, (1, 3))]
RC = {"svg.hashsalt": "rnnlab-report", "font.family": "DejaVu Sans", "font.size": 9, "axes.grid": True,
      "grid.alpha": 0.3, "figure.dpi": DPI, "savefig.dpi": DPI}  # fmt: skip


@contextmanager
def _style() -> Iterator[None]:
    import matplotlib

    with matplotlib.rc_context(RC):
        yield


def _figure(width: float, height: float) -> Any:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=DPI, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _save(fig: Any, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, format="png", dpi=DPI, metadata={"Software": None})


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", str(text)).strip("_") or "x"


def backend_color(backend: Any, order: list[str]) -> str:
    name = str(backend)
    if name in BACKEND_COLORS:
        return BACKEND_COLORS[name]
    others = [b for b in order if b not in BACKEND_COLORS]
    return OTHER_COLORS[others.index(name) % len(OTHER_COLORS)] if name in others else OTHER_COLORS[-1]


def cell_style(cell: Any, order: list[str]) -> Any:
    name = str(cell)
    if name in CELL_STYLES:
        return CELL_STYLES[name]
    others = [c for c in order if c not in CELL_STYLES]
    return OTHER_STYLES[others.index(name) % len(OTHER_STYLES)] if name in others else "-"


def _legend(ax: Any, runs: pd.DataFrame) -> None:
    """Proxy entries: one colour per backend, one line style per cell (stays small for any number of runs)."""
    from matplotlib.lines import Line2D

    backends = sorted(runs["backend"].astype(str).unique())
    cells = sorted(runs["cell"].astype(str).unique())
    handles = [Line2D([], [], color=backend_color(b, backends), lw=2, label=b) for b in backends]
    handles += [Line2D([], [], color="black", ls=cell_style(c, cells), label=c) for c in cells]
    ax.legend(handles=handles, fontsize=8, loc="best")


def learning_curves(runs: pd.DataFrame, curves: pd.DataFrame, out_dir: Path) -> list[tuple[Path, str]]:
    """Per task: train/loss, val/loss and the task's monitored metric against step, one line per run.

    Returns (path, caption) of each figure written.
    """
    written = []
    backends = sorted(runs["backend"].astype(str).unique())
    cells = sorted(runs["cell"].astype(str).unique())
    for task, group in runs.groupby(runs["task"].astype(str), sort=True):
        monitors = [m for m in group["monitor"].dropna().unique() if m not in ("train/loss", "val/loss")]
        present = set(curves.loc[curves["run"].isin(group["run"]), "tag"])
        tags = [t for t in ["train/loss", "val/loss", *sorted(monitors)] if t in present]
        if not tags:
            continue
        with _style():
            fig = _figure(4.0 * len(tags), 3.4)
            axes = fig.subplots(1, len(tags), squeeze=False)[0]
            for ax, tag in zip(axes, tags, strict=True):
                for _, run in group.iterrows():
                    values = curves[(curves["run"] == run["run"]) & (curves["tag"] == tag)]
                    values = values.groupby("step")["value"].last()
                    if values.empty:
                        continue
                    marker = "o" if len(values) <= 20 else None
                    # Earlier backends wider, underneath: coinciding curves of two backends both stay visible.
                    width = 1.4 + 1.6 * (len(backends) - 1 - backends.index(str(run["backend"])))
                    ax.plot(values.index, values.to_numpy(), color=backend_color(run["backend"], backends),
                            ls=cell_style(run["cell"], cells), marker=marker, ms=3, lw=width, alpha=0.85)  # fmt: skip
                ax.set_title(tag)
                ax.set_xlabel("step")
            _legend(axes[0], group)
            fig.suptitle(f"learning curves: {task}")
            path = out_dir / f"curves_{_slug(task)}.png"
            _save(fig, path)
        written.append((path, f"Learning curves, task {task} (colour: backend, line style: cell)"))
    return written


def _bars(runs: pd.DataFrame, column: str, xlabel: str, title: str, path: Path) -> bool:
    data = runs[pd.to_numeric(runs[column], errors="coerce").notna()] if column in runs else runs.iloc[0:0]
    if data.empty:
        return False
    backends = sorted(runs["backend"].astype(str).unique())
    labels = [f"#{i} {r['cell']} {r['backend']}" for i, r in data.iterrows()]
    with _style():
        fig = _figure(6.0, 1.0 + 0.32 * len(data))
        ax = fig.subplots()
        ys = list(range(len(data)))
        ax.barh(ys, data[column].astype(float).to_numpy(), color=[backend_color(b, backends) for b in data["backend"]])
        ax.set_yticks(ys, labels)
        ax.invert_yaxis()
        ax.set_xlabel(xlabel)
        ax.set_title(title)
        _save(fig, path)
    return True


def step_time_bars(runs: pd.DataFrame, out_dir: Path) -> list[tuple[Path, str]]:
    """Median training-step time of each run, bars coloured by backend."""
    path = out_dir / "step_time.png"
    ok = _bars(runs, "step_ms", "median step time [ms]", "training step time", path)
    return [(path, "Median training-step time per run (colour: backend)")] if ok else []


def metric_bars(runs: pd.DataFrame, out_dir: Path) -> list[tuple[Path, str]]:
    """Per task: the best value of the monitored metric of each run, and its test value where there is one."""
    written = []
    for task, group in runs.groupby(runs["task"].astype(str), sort=True):
        for monitor in sorted(group["monitor"].dropna().unique()):
            for column, what in ((f"{monitor}_best", f"best {monitor}"), ("test/" + monitor.split("/", 1)[-1], "")):
                what = what or column
                path = out_dir / f"metric_{_slug(task)}_{_slug(what)}.png"
                if _bars(group, column, what, f"{what} ({task})", path):
                    written.append((path, f"{what}, task {task} (colour: backend)"))
    return written


def _last_picture(tag_dir: Path) -> Path | None:
    pictures = [p for p in tag_dir.glob("step_*.png") if re.fullmatch(r"step_\d+\.png", p.name)]
    return max(pictures, key=lambda p: int(p.stem[5:])) if pictures else None


def copy_task_pictures(runs: pd.DataFrame, out_dir: Path, per_run: int = 4) -> list[tuple[str, str, Path]]:
    """Copy the last ``step_*.png`` of each ``figures/<tag>/`` of each run (at most ``per_run`` tags, in name
    order) to ``out_dir/runs/<run #>_<tag>.png``. Returns (run id, tag, path) of each copy."""
    copied = []
    for i, run in runs.iterrows():
        figures = Path(run["path"]) / "figures"
        if not figures.is_dir():
            continue
        tags = sorted(d for d in figures.iterdir() if d.is_dir())
        taken = 0
        for tag_dir in tags:
            if taken >= per_run:
                break
            last = _last_picture(tag_dir)
            if last is None:
                continue
            target = out_dir / "runs" / f"{i:02d}_{_slug(tag_dir.name)}.png"
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(last, target)
            copied.append((str(run["run"]), f"{tag_dir.name} ({last.stem.replace('_', ' ')})", target))
            taken += 1
    return copied
