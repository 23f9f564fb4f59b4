"""Write a report directory: README.md (optionally report.html), runs.csv, pairs.csv and figures/.

The whole report is built in a temporary sibling of ``out`` and then swapped in (old report renamed aside, new one
renamed into place, old one deleted): a failure midway leaves a previous report as it was, and no partial files.
"""

from __future__ import annotations

import html
import math
import os
import re
from pathlib import Path
from typing import Any

import pandas as pd

from rnnlab.atomic import replace_dir
from rnnlab.report import figures
from rnnlab.report.collect import MARKER, ReportError
from rnnlab.report.compare import pair_runs
from rnnlab.report.seeds import over_seeds, paired_backends

# Block kinds: ("h", level, text) ("p", text) ("list", [text]) ("table", headers, rows, code_columns) ("img", src, alt).
# Text may hold `code` spans.
Block = tuple[Any, ...]
RUN_COLUMNS = [("status", "status"), ("backend", "backend"), ("cell", "cell"), ("layers", "layers"),
               ("directions", "dirs"), ("hidden_size", "hidden"), ("task", "task"), ("data", "data"),
               ("optimizer", "optim"), ("lr", "lr"), ("seed", "seed"), ("precision", "precision"),
               ("num_params", "params"), ("step_ms", "step ms"), ("samples_per_s", "samples/s"),
               ("peak_rss_mb", "peak RSS MB")]  # fmt: skip


def fmt(value: Any, column: str = "") -> str:
    """A table cell: blank for missing, yes/no for booleans, thousands separators for counts, 4 significant digits."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    if isinstance(value, bool):
        return "yes" if value else "no"
    if column in ("num_params", "last_step", "curve_common_steps") and isinstance(value, int | float):
        return f"{int(value):,}"
    if isinstance(value, float):
        return f"{int(value)}" if value.is_integer() and abs(value) < 1e6 and column != "lr" else f"{value:.4g}"
    return str(value)


def shown_metrics(runs: pd.DataFrame) -> list[str]:
    """The metric columns of the Markdown tables: best and final of val/loss and of each monitored metric, and their
    test values (every metric is in runs.csv)."""
    names = ["val/loss", *sorted(m for m in runs.get("monitor", pd.Series(dtype=object)).dropna().unique())]
    names = list(dict.fromkeys(names))
    columns = []
    for name in names:
        columns += [f"{name}_best", f"{name}_final"]
    columns += ["test/" + n.split("/", 1)[-1] for n in names]
    return [c for c in columns if c in runs.columns and runs[c].notna().any()]


def _label(column: str) -> str:
    return column.replace("_best", " best").replace("_final", " final")


def _runs_table(runs: pd.DataFrame) -> Block:
    metrics = shown_metrics(runs)
    headers = ["#", "run"] + [h for _, h in RUN_COLUMNS] + [_label(c) for c in metrics]
    rows = []
    for i, run in runs.iterrows():
        rows.append([f"{i}", run["run"]] + [fmt(run[c], c) for c, _ in RUN_COLUMNS] + [fmt(run[c], c) for c in metrics])
    return ("table", headers, rows, {1})


def _pairs_table(pairs: pd.DataFrame, runs: pd.DataFrame) -> Block:
    number = {run: i for i, run in runs["run"].items()}
    diffs = [f"diff {c}" for c in shown_metrics(runs) if f"diff {c}" in pairs.columns]
    cols = [("task", "task"), ("cell", "cell"), ("layers", "layers"), ("directions", "dirs"),
            ("hidden_size", "hidden"), ("seed", "seed"), ("precision", "precision"),
            ("step_ms_numpy", "numpy ms"), ("step_ms_torch", "torch ms"), ("time_ratio", "time numpy/torch"),
            ("memory_ratio", "memory numpy/torch")]  # fmt: skip
    cols += [(d, "Δ " + _label(d[5:])) for d in diffs]
    cols += [("curve_max_abs_diff", "curve max abs Δ"), ("curves_coincide", "curves coincide")]
    headers = ["numpy run", "torch run"] + [h for _, h in cols]
    rows = []
    for _, pair in pairs.iterrows():
        curve = f"{pair['curve_tag']}: " if pair["curve_tag"] != "val/loss" else ""
        cells = [f"#{number[pair['run_numpy']]}", f"#{number[pair['run_torch']]}"]
        for c, _ in cols:
            text = fmt(pair[c], c)
            cells.append(curve + text if c == "curve_max_abs_diff" and text else text)
        rows.append(cells)
    return ("table", headers, rows, set())


def _mean_sd_ci(row: pd.Series, metric: str) -> str:
    mean, sd = row.get(f"{metric} mean"), row.get(f"{metric} sd")
    low, high = row.get(f"{metric} ci_low"), row.get(f"{metric} ci_high")
    if mean is None or pd.isna(mean):
        return ""
    if sd is None or pd.isna(sd):
        return f"{mean:.4g}"
    return f"{mean:.4g} ± {sd:.2g} [{low:.4g}, {high:.4g}]"


def _setting_cells(row: pd.Series) -> list[str]:
    variant = row.get("variant")
    cell = str(row.get("cell")) + (f" ({variant})" if isinstance(variant, str) and variant != "standard" else "")
    return [f"{row['setting_hash']}", cell, fmt(row.get("hidden_size")), str(row.get("optimizer")),
            fmt(row.get("lr"), "lr"), fmt(row.get("num_params"), "num_params")]  # fmt: skip


SETTING_HEADERS = ["config", "cell", "hidden", "optim", "lr", "params"]


def _seeds_blocks(runs: pd.DataFrame, seeds: pd.DataFrame, paired: pd.DataFrame) -> list[Block]:
    """The sections over seeds: shown when some configuration ran with two or more seeds on one backend."""
    if not len(seeds) or int(seeds["n"].max()) < 2:
        return []
    metrics = [m for m in shown_metrics(runs) if m.startswith("test/") or m.endswith("_best")]
    metrics = [m for m in metrics if f"{m} mean" in seeds.columns]
    blocks: list[Block] = [
        ("h", 2, "Over seeds"),
        ("p", "Completed runs of one configuration (the resolved config without seed and backend; `config` is its "
              "hash, `setting_hash` in `runs.csv`): mean ± standard deviation (n − 1) [95 % t interval of the "
              "mean] over the seeds. All in `seeds.csv`."),
        ("table", [*SETTING_HEADERS, "backend", "seeds", *[_label(m) for m in metrics]],
         [[*_setting_cells(r), str(r["backend"]), str(r["seeds"]), *[_mean_sd_ci(r, m) for m in metrics]]
          for _, r in seeds.iterrows()], {0}),
    ]  # fmt: skip
    if len(paired):
        rows = []
        for _, r in paired.iterrows():
            cells = [*_setting_cells(r), str(r["seeds"])]
            for m in metrics:
                diff, low, high = r.get(f"{m} diff"), r.get(f"{m} diff ci_low"), r.get(f"{m} diff ci_high")
                text = "" if diff is None or pd.isna(diff) else f"{diff:+.3g}"
                if text and not pd.isna(low):
                    text += f" [{low:+.3g}, {high:+.3g}]"
                cells += [fmt(r.get(f"{m} numpy")), fmt(r.get(f"{m} torch")), text]
            rows.append(cells)
        headers = [*SETTING_HEADERS, "seeds"]
        for m in metrics:
            headers += [f"{_label(m)} numpy", f"{_label(m)} torch", f"Δ {_label(m)} [95 %]"]
        blocks += [
            ("h", 2, "NumPy vs PyTorch, paired by seed"),
            ("p", "Each configuration run on both backends with the same seeds: the means over the common seeds and "
                  "the mean of the per-seed differences NumPy minus PyTorch with its 95 % t interval (an interval "
                  "that holds 0: no difference the seeds can resolve). All in `seeds_paired.csv`."),
            ("table", headers, rows, {0}),
        ]  # fmt: skip
    return blocks


def _blocks(runs: pd.DataFrame, pairs: pd.DataFrame, made: dict[str, Any], title: str, command: str,
            seeds: pd.DataFrame | None = None, paired: pd.DataFrame | None = None) -> list[Block]:  # fmt: skip
    done = int((runs["status"] == "completed").sum())
    plural = "" if len(pairs) == 1 else "s"
    blocks: list[Block] = [
        ("h", 1, title),
        ("p", f"Generated by `{command}` from {len(runs)} runs ({done} completed, {len(runs) - done} incomplete or "
              f"failed) and {len(pairs)} NumPy/PyTorch pair{plural}. Every column is in `runs.csv` and `pairs.csv`."),
        ("h", 2, "Runs"),
        _runs_table(runs),
        ("h", 2, "NumPy vs PyTorch"),
    ]  # fmt: skip
    if len(pairs):
        blocks.append(("p", "Pairs of completed runs whose resolved configs differ in `model.backend` only. Ratios "
                            "are NumPy over PyTorch (median step time, peak RSS); Δ is NumPy minus PyTorch; the curves "
                            "coincide when the max abs difference of val/loss over common steps is at most 1e-6 "
                            "(float64) or 1e-3 (other precisions)."))  # fmt: skip
        blocks.append(_pairs_table(pairs, runs))
    else:
        blocks.append(("p", "No pair of completed runs differs in `model.backend` only."))
    if seeds is not None and paired is not None:
        blocks += _seeds_blocks(runs, seeds, paired)
    blocks.append(("h", 2, "Incomplete or failed runs"))
    unfinished = runs[runs["status"] != "completed"]
    if len(unfinished):
        items = []
        for i, run in unfinished.iterrows():
            status = "incomplete/failed (no summary.json)" if run["status"] == "incomplete" else run["status"]
            text = f"#{i} `{run['run']}`: {status}; last step {fmt(run['last_step'])}, epoch {fmt(run['last_epoch'])}"
            if isinstance(run.get("error"), str) and run["error"]:
                text += f"; error: {run['error']}"
            items.append(text)
        blocks.append(("list", items))
    else:
        blocks.append(("p", "None: every run completed."))
    blocks.append(("h", 2, "Figures"))
    if made["plots"]:
        for path, caption in made["plots"]:
            blocks += [("img", path, caption), ("p", caption)]
    else:
        blocks.append(("p", "No logged scalars to plot."))
    if made["pictures"]:
        blocks.append(("h", 2, "Task pictures"))
        blocks.append(("p", "The last picture of each `figures/<tag>/` of each run."))
        current = None
        for run_id, tag, path in made["pictures"]:
            if run_id != current:
                current = run_id
                blocks.append(("h", 3, f"`{run_id}`"))
            blocks += [("img", path, tag), ("p", tag)]
    return blocks


def _md_cell(text: str, code: bool) -> str:
    text = text.replace("|", "\\|").replace("\n", " ")
    return f"`{text}`" if code and text else text


def to_markdown(blocks: list[Block]) -> str:
    lines: list[str] = []
    for block in blocks:
        kind = block[0]
        if kind == "h":
            lines += ["#" * block[1] + " " + block[2], ""]
        elif kind == "p":
            lines += [block[1], ""]
        elif kind == "list":
            lines += [f"- {item}" for item in block[1]] + [""]
        elif kind == "table":
            _, headers, rows, code = block
            lines.append("| " + " | ".join(_md_cell(h, False) for h in headers) + " |")
            lines.append("|" + "|".join("---" for _ in headers) + "|")
            lines += ["| " + " | ".join(_md_cell(c, j in code) for j, c in enumerate(r)) + " |" for r in rows]
            lines.append("")
        elif kind == "img":
            lines += [f"![{block[2]}]({block[1]})", ""]
    return "\n".join(lines).rstrip("\n") + "\n"


def _html_text(text: str) -> str:
    return re.sub(r"`([^`]*)`", r"<code>\1</code>", html.escape(text, quote=False))


def to_html(blocks: list[Block]) -> str:
    title = next((b[2] for b in blocks if b[0] == "h"), "report")
    out = ["<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">', f"<title>{html.escape(title)}</title>",
           "<style>body{font-family:sans-serif;margin:2em}table{border-collapse:collapse;font-size:0.85em}"
           "th,td{border:1px solid #ccc;padding:2px 6px;text-align:right}td:nth-child(2){text-align:left}"
           "img{max-width:100%}</style></head><body>"]  # fmt: skip
    for block in blocks:
        kind = block[0]
        if kind == "h":
            out.append(f"<h{block[1]}>{_html_text(block[2])}</h{block[1]}>")
        elif kind == "p":
            out.append(f"<p>{_html_text(block[1])}</p>")
        elif kind == "list":
            out.append("<ul>" + "".join(f"<li>{_html_text(i)}</li>" for i in block[1]) + "</ul>")
        elif kind == "table":
            _, headers, rows, code = block
            out.append("<table><thead><tr>" + "".join(f"<th>{html.escape(h)}</th>" for h in headers) + "</tr></thead>")
            body = []
            for r in rows:
                cells = [f"<code>{html.escape(c)}</code>" if j in code else html.escape(c) for j, c in enumerate(r)]
                body.append("<tr>" + "".join(f"<td>{c}</td>" for c in cells) + "</tr>")
            out.append("<tbody>" + "".join(body) + "</tbody></table>")
        elif kind == "img":
            out.append(f'<p><img src="{html.escape(block[1])}" alt="{html.escape(block[2])}"></p>')
    out.append("</body></html>")
    return "\n".join(out) + "\n"


def make_figures(runs: pd.DataFrame, curves: pd.DataFrame, report_dir: Path, per_run: int) -> dict[str, Any]:
    """Draw the report's figures and copy the runs' pictures under ``report_dir/figures``; paths relative."""
    fig_dir = report_dir / "figures"
    plots = (figures.learning_curves(runs, curves, fig_dir) + figures.step_time_bars(runs, fig_dir)
             + figures.metric_bars(runs, fig_dir))  # fmt: skip
    pictures = figures.copy_task_pictures(runs, fig_dir, per_run=per_run)
    rel = lambda p: p.relative_to(report_dir).as_posix()  # noqa: E731
    return {"plots": [(rel(p), c) for p, c in plots], "pictures": [(r, t, rel(p)) for r, t, p in pictures]}


def check_out(out: Path) -> None:
    """Refuse to replace anything but a previous report (it would be deleted): a file, or a directory that is not
    empty and has no report marker."""
    if out.exists() and not out.is_dir():
        raise ReportError(f"--out exists and is not a directory: {out}")
    if out.is_dir() and any(out.iterdir()) and not (out / MARKER).is_file():
        raise ReportError(f"--out is a non-empty directory that is not a report (not replacing it): {out}")


def build(runs: pd.DataFrame, curves: pd.DataFrame, report_dir: Path, *, title: str, command: str, html_too: bool,
          pictures_per_run: int) -> pd.DataFrame:  # fmt: skip
    """Write every file of the report into the (empty) ``report_dir``; returns the pairs table."""
    pairs = pair_runs(runs, curves)
    made = make_figures(runs, curves, report_dir, pictures_per_run)
    seeds, paired = over_seeds(runs), paired_backends(runs)
    runs.drop(columns=["config_key"]).to_csv(report_dir / "runs.csv", index_label="#")
    pairs.to_csv(report_dir / "pairs.csv", index=False)
    seeds.to_csv(report_dir / "seeds.csv", index=False)
    paired.to_csv(report_dir / "seeds_paired.csv", index=False)
    blocks = _blocks(runs, pairs, made, title, command, seeds, paired)
    (report_dir / "README.md").write_text(to_markdown(blocks))
    if html_too:
        (report_dir / "report.html").write_text(to_html(blocks))
    (report_dir / MARKER).write_text("written by rnnlab-report; the whole directory is replaced on the next run\n")
    return pairs


def write_report(
    runs: pd.DataFrame,
    curves: pd.DataFrame,
    out: str | os.PathLike[str],
    *,
    title: str = "rnnlab report",
    command: str | None = None,
    html: bool = False,
    pictures_per_run: int = 4,
) -> Path:
    """Write the report of ``runs`` and ``curves`` (from :func:`collect_runs`) to ``out``, atomically; returns
    ``out``. ``command`` is quoted in the "how generated" line; ``html`` also writes report.html."""
    out = Path(out).absolute()
    check_out(out)
    runs = runs.reset_index(drop=True)
    with replace_dir(out) as tmp:
        build(runs, curves, tmp, title=title, command=command or "rnnlab.report.write_report()", html_too=html,
              pictures_per_run=pictures_per_run)  # fmt: skip
    return out
