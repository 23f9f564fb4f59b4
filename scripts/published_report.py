"""The report of scripts/published.py: experiments/published/README.md and its figures, from whatever has finished.

Seeds are aggregated by rnnlab-report's own functions (``rnnlab.report.seeds``: mean, sd, 95 % t interval, the
backends paired by seed), so that the report and ``rnnlab-report`` agree on every number.
"""

from __future__ import annotations

import json
import math
import platform
import shutil
import statistics
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import published as P

NEAR = 0.25  # the limit: the best of each cell type within 0.25 nats of the published figure
GREFF_HURTS = ("nfg", "noaf")  # Greff et al. 2017: removing the forget gate or the output activation hurts most
GREFF_HARMLESS = ("cifg", "standard")  # coupling input and forget gates, or dropping the peepholes, does not


def f3(value: Any) -> str:
    return "-" if value is None or (isinstance(value, float) and not math.isfinite(value)) else f"{value:.3f}"


def table(headers: list[str], rows: list[list[Any]]) -> list[str]:
    """A Markdown table as rnnlab-report writes one (rnnlab.report.render), as lines."""
    from rnnlab.report.render import to_markdown

    text = to_markdown([("table", headers, [[str(c) for c in row] for row in rows], set())])
    return [*text.rstrip("\n").split("\n"), ""]


def rel(path: Path) -> str:
    """``path`` relative to the repository (``../shared/...`` for the data beside it)."""
    import os

    return Path(os.path.relpath(path, P.ROOT)).as_posix()


# ---------------------------------------------------------------------------------------------- the tables
def seed_tables(plan: P.Plan, split: str) -> tuple[list[dict[str, Any]], Any, Any]:
    """The runs of one split's tables, and rnnlab-report's seed aggregation of them (over_seeds, paired_backends),
    each row labelled with its (setting, cell)."""
    from rnnlab.report.collect import collect_runs
    from rnnlab.report.seeds import over_seeds, paired_backends

    try:
        jobs = P.noise_jobs(plan) if split == "noise" else P.table_jobs(plan, split)
    except SystemExit:
        return [], None, None
    rows = P.collect(plan, jobs)
    dirs = [r["dir"] for r in rows if r["status"] == "completed"]
    if not dirs:
        return rows, None, None
    runs, _ = collect_runs(dirs)
    label = {str(r["dir"]): (r["setting"], r["cell"]) for r in rows}
    runs["preset"] = [label[p] for p in runs["path"]]
    seeds, paired = over_seeds(runs), paired_backends(runs)
    by_hash = dict(zip(runs["setting_hash"], runs["preset"], strict=False))
    for frame in (seeds, paired):
        frame["preset"] = [by_hash[h] for h in frame["setting_hash"]] if len(frame) else []
    return rows, seeds, paired


def stat(seeds: Any, key: tuple[str, str], backend: str) -> dict[str, float]:
    if seeds is None:
        return {}
    hit = seeds[(seeds["preset"] == key) & (seeds["backend"] == backend)]
    if not len(hit):
        return {}
    r = hit.iloc[0]
    return {"n": int(r["n"]), "mean": r["test/nll mean"], "sd": r["test/nll sd"], "low": r["test/nll ci_low"],
            "high": r["test/nll ci_high"], "seeds": r["seeds"]}  # fmt: skip


def mean_text(s: dict[str, float]) -> str:
    if not s:
        return "-"
    if s["n"] < 2:
        return f"{s['mean']:.3f} (1 seed)"
    return f"{s['mean']:.3f} ± {s['sd']:.3f} [{s['low']:.2f}, {s['high']:.2f}]"


def main_table(rows: list[dict[str, Any]], seeds: Any, paired: Any) -> tuple[list[str], list[str]]:
    """The side-by-side table (paper | torch | NumPy | best seed) and the checks of the issue's numbers."""
    lines, checks = [], []
    body = []
    for setting in ("chung", "bai"):
        for cell in P.CELLS:
            key = (setting, cell)
            t, n = stat(seeds, key, "torch"), stat(seeds, key, "numpy")
            tests = [r["test"] for r in rows if (r["setting"], r["cell"]) == key and r["status"] == "completed"
                     and r["test"] is not None]  # fmt: skip
            best = min(tests) if tests else None
            paper = P.PUBLISHED[key]
            params = next((r["params"] for r in rows if (r["setting"], r["cell"]) == key and r.get("params")), None)
            body.append([P.SETTING_NAMES[setting].split(" (")[0], cell, f"`{P.PRESETS[key]}`",
                         f"{params:,}" if params else "-", f"{paper:.2f}", mean_text(t), mean_text(n), f3(best),
                         f3(best - paper) if best is not None else "-"])  # fmt: skip
            if best is not None:
                ok = best <= paper + NEAR
                checks.append(f"{P.PRESETS[key]}: best run {best:.3f} against the published {paper:.2f}: "
                              f"{best - paper:+.3f} nats ({'met' if ok else 'NOT met'}, limit +{NEAR})")  # fmt: skip
            if t and n and t["n"] > 1:
                limit = max(0.05, 2 * t["sd"])
                ok = abs(n["mean"] - t["mean"]) <= limit
                checks.append(f"{P.PRESETS[key]}: NumPy mean {n['mean']:.3f} against torch's {t['mean']:.3f}: "
                              f"{n['mean'] - t['mean']:+.3f}, limit max(0.05, 2 x {t['sd']:.3f}) = {limit:.3f} "
                              f"({'met' if ok else 'NOT met'})")  # fmt: skip
    lines += table(
        [
            "paper",
            "cell",
            "preset",
            "params",
            "published test NLL",
            "rnnlab torch: mean ± sd [95 %]",
            "rnnlab NumPy: mean ± sd [95 %]",
            "best run (either backend)",
            "best - published",
        ],
        body,
    )
    return lines, checks


def ordering(seeds: Any) -> list[str]:
    """The published ordering of the cells against ours (torch means); every pair in the other order is held
    against the published gap and our seeds' spread."""
    out = []
    for setting in ("chung", "bai"):
        paper = sorted(P.CELLS, key=lambda c: P.PUBLISHED[(setting, c)])
        ours = {c: stat(seeds, (setting, c), "torch") for c in P.CELLS}
        if any(not v for v in ours.values()):
            continue
        mine = sorted(P.CELLS, key=lambda c: ours[c]["mean"])
        same = "the same" if mine == paper else "a different"
        out.append(f"{P.SETTING_NAMES[setting]}: published {' < '.join(paper)}; rnnlab (torch means) "
                   f"{' < '.join(mine)}: {same} ordering.")  # fmt: skip
        for i, a in enumerate(paper):
            for b in paper[i + 1 :]:
                if ours[a]["mean"] <= ours[b]["mean"]:
                    continue
                gap = P.PUBLISHED[(setting, b)] - P.PUBLISHED[(setting, a)]
                ours_gap = ours[a]["mean"] - ours[b]["mean"]
                spread = max(ours[a]["sd"], ours[b]["sd"])
                out.append(f"  {a} and {b} swap places: the paper has {a} ahead by {gap:.2f} nats, rnnlab has {b} "
                           f"ahead by {ours_gap:.3f} (seeds' sd up to {spread:.3f}; 95 % intervals on torch: {a} "
                           f"{ours[a]['low']:.2f}-{ours[a]['high']:.2f}, {b} "
                           f"{ours[b]['low']:.2f}-{ours[b]['high']:.2f}).")  # fmt: skip
    return out


def observations(plan: P.Plan, rows: list[dict[str, Any]]) -> list[str]:
    """What the runs themselves say about the protocol: a search whose best candidate is at the edge of its
    candidates, a preset whose val/nll was still falling at its last epoch."""
    out = []
    chosen = P.selected(plan)
    for key, pick in chosen.items():
        candidates = P.lr_candidates(*key, plan.candidates[key[0]])
        if pick["lr"] in (candidates[0], candidates[-1]):
            edge = "smallest" if pick["lr"] == candidates[0] else "largest"
            out.append(f"`{P.PRESETS[key]}`: the search chose its {edge} candidate ({pick['lr']:g}); a wider range "
                       "might find a better rate.")  # fmt: skip
    for setting in ("chung", "bai"):
        for cell in P.CELLS:
            runs = [r for r in rows if (r["setting"], r["cell"]) == (setting, cell) and r["status"] == "completed"
                    and r["best_epoch"]]  # fmt: skip
            late = [r for r in runs if r["best_epoch"] >= r["epochs"] - 1]
            if runs and len(late) * 2 > len(runs):
                out.append(f"`{P.PRESETS[(setting, cell)]}`: {len(late)} of {len(runs)} runs had their best val/nll "
                           "in the last two epochs: still improving, more epochs would likely lower it.")  # fmt: skip
    return out


def noise_section(plan: P.Plan, seeds: Any) -> list[str]:
    """The Chung presets with and without their weight noise, side by side."""
    rows, noisy, paired = seed_tables(plan, "noise")
    lines = [f"## Chung et al.'s weight noise (`model.weight_noise={P.WEIGHT_NOISE}`)", ""]
    if not rows:
        return [*lines, "Not run yet (`--stages noise`).", ""]
    lines += [f"The Chung presets again, everything as in the tables but weight noise of standard deviation "
              f"{P.WEIGHT_NOISE} on every parameter at every training step (their protocol; "
              "rnnlab/models/weight_noise.py). Test NLL, mean ± sd [95 %] over the seeds:", ""]  # fmt: skip
    body = []
    for cell in P.CELLS:
        key = ("chung", cell)
        body.append([f"`{P.PRESETS[key]}`", f"{P.PUBLISHED[key]:.2f}", mean_text(stat(seeds, key, "torch")),
                     mean_text(stat(noisy, key, "torch")), mean_text(stat(noisy, key, "numpy"))])  # fmt: skip
    lines += table(["preset", "published", "torch, no noise (the tables)", "torch, weight noise",
                    "NumPy, weight noise"], body)  # fmt: skip
    lines += ["NumPy against PyTorch with weight noise, paired by seed:", "", *paired_table(paired)]
    return lines


def paired_table(paired: Any) -> list[str]:
    if paired is None or not len(paired):
        return ["No configuration has finished on both backends yet.", ""]
    body = []
    for setting in ("chung", "bai"):
        for cell in P.CELLS:
            hit = paired[paired["preset"] == (setting, cell)]
            if not len(hit):
                continue
            r = hit.iloc[0]
            low, high = r["test/nll diff ci_low"], r["test/nll diff ci_high"]
            ci = f"[{low:+.4f}, {high:+.4f}]" if math.isfinite(low) else "-"
            body.append([f"`{P.PRESETS[(setting, cell)]}`", r["seeds"], f3(r["test/nll numpy"]),
                         f3(r["test/nll torch"]), f"{r['test/nll diff']:+.4f}", ci])  # fmt: skip
    return table(["preset", "seeds", "NumPy mean", "torch mean", "mean of NumPy - torch", "95 % interval"], body)


def search_section(plan: P.Plan) -> list[str]:
    chosen = P.selected(plan)
    lines = []
    for (setting, cell), (optimizer, (low, high)) in P.SEARCHED.items():
        jobs = [j for j in P.search_jobs(plan) if (j.info["setting"], j.info["cell"]) == (setting, cell)]
        cells = []
        for job in jobs:
            r = P.load_run(plan.work / job.name)
            mark = "**" if chosen.get((setting, cell), {}).get("lr") == job.info["lr"] else ""
            val = "-" if r is None else ("diverged" if r["status"] != "completed" else f3(r["val"]))
            cells.append(f"{mark}{job.info['lr']:g}: {val}{mark}")
        preset = P.preset_lr(P.PRESETS[(setting, cell)])
        pick = chosen.get((setting, cell), {}).get("lr")
        note = "" if pick is None else f"; the preset's lr {preset:g} {'is' if preset == pick else 'is NOT'} the choice"
        lines.append(f"- `{P.PRESETS[(setting, cell)]}` ({optimizer}, lr = 10^U({low}, {high}), "
                     f"{len(jobs)} candidates): {'; '.join(cells)}{note}")  # fmt: skip
    return [*lines, ""]


def numpy_tests(rows: list[dict[str, Any]], key: tuple[str, str], lr: float | None = None) -> dict[str, float]:
    """rnnlab-report's n, mean, sd and 95 % interval of the completed NumPy runs' test/nll of one preset (at ``lr``)."""
    import pandas as pd

    from rnnlab.report.seeds import interval

    hits = [r["test"] for r in rows if (r["setting"], r["cell"]) == key and r["backend"] == "numpy"
            and r["status"] == "completed" and (lr is None or r.get("lr") == lr)]  # fmt: skip
    return interval(pd.Series(hits, dtype=float))


def ordering_section(plan: P.Plan) -> list[str]:
    """The stage ``ordering``: the Bai GRU and LSTM each at its own searched learning rate against the tables'
    shared 3e-3 (NumPy runs), and the order of the two cells at their own rates."""
    lines = ["### Each cell at its own learning rate (stage `ordering`)", ""]
    try:
        candidates, runs = P.ordering_jobs(plan), P.ordering_jobs(plan, seeds=True)
    except SystemExit:
        return [*lines, "Not run yet (`--stages search,tables,ordering`).", ""]
    chosen = P.selected(plan, candidates)
    if not chosen:
        return [*lines, "Not run yet (`--stages ordering`).", ""]
    lines += ["The Bai GRU and LSTM presets hold the music issue's lr 3e-3, which was set for the LSTM. Here each "
              "cell gets its own rate, chosen on val/nll like the RNN's (seed 1, NumPy; the preset's own run is a "
              "candidate), and the choice is trained on every seed:", ""]  # fmt: skip
    for (setting, cell), (optimizer, (low, high)) in P.RETUNED.items():
        jobs = [j for j in candidates if (j.info["setting"], j.info["cell"]) == (setting, cell)]
        if not jobs:
            continue
        cells = []
        for job in jobs:
            r = P.load_run(plan.work / job.name)
            mark = "**" if chosen.get((setting, cell), {}).get("lr") == job.info["lr"] else ""
            val = "-" if r is None else ("diverged" if r["status"] != "completed" else f3(r["val"]))
            own = " (the preset's)" if job.info["preset_lr"] else ""
            cells.append(f"{mark}{job.info['lr']:g}{own}: {val}{mark}")
        rates = [j.info["lr"] for j in jobs]
        pick = chosen.get((setting, cell), {}).get("lr")
        edge = {min(rates): "smallest", max(rates): "largest"}.get(pick)
        note = f" (the {edge} candidate: a wider range might do better still)" if edge else ""
        lines.append(f"- `{P.PRESETS[(setting, cell)]}` ({optimizer}, lr = 10^U({low}, {high}), "
                     f"{len(jobs) - 1} candidates and the preset's rate): {'; '.join(cells)}{note}")  # fmt: skip
    lines.append("")
    tables = P.collect(plan, P.table_jobs(plan, "standard"))
    ordered = P.collect(plan, runs)
    body, means = [], {}
    for (setting, cell), pick in chosen.items():
        before = numpy_tests(tables, (setting, cell))
        after = numpy_tests(ordered, (setting, cell), pick["lr"])
        means[cell] = after
        text = [
            f"{s['mean']:.3f} ± {s['sd']:.3f} [{s['ci_low']:.2f}, {s['ci_high']:.2f}] ({s['n']} seeds)"
            if s["n"] > 1
            else (f"{s['mean']:.3f} (1 seed)" if s["n"] else "-")
            for s in (before, after)
        ]
        body.append([f"`{P.PRESETS[(setting, cell)]}`", f"{P.preset_lr(P.PRESETS[(setting, cell)]):g}", text[0],
                     f"{pick['lr']:g}", text[1], f"{P.PUBLISHED[(setting, cell)]:.2f}"])  # fmt: skip
    lines += table(["preset", "preset lr", "NumPy test NLL at the preset's lr (the tables)", "own lr",
                    "NumPy test NLL at its own lr", "published"], body)  # fmt: skip
    if {"gru", "lstm"} <= set(means) and all(means[c]["n"] for c in ("gru", "lstm")):
        gru, lstm = means["gru"], means["lstm"]
        ahead, behind = ("gru", "lstm") if gru["mean"] < lstm["mean"] else ("lstm", "gru")
        gap = abs(gru["mean"] - lstm["mean"])
        spread = max([v for v in (gru["sd"], lstm["sd"]) if math.isfinite(v)] or [math.nan])
        verdict = ("the published order (gru ahead) returns" if ahead == "gru" else
                   "the LSTM stays ahead: the tables' order is not an artefact of the shared rate")  # fmt: skip
        published = abs(P.PUBLISHED[("bai", "gru")] - P.PUBLISHED[("bai", "lstm")])
        lines += [f"At their own rates {ahead} < {behind} by {gap:.3f} nats (seeds' sd up to {spread:.3f}): "
                  f"{verdict}. Bai et al.'s own gap is {published:.2f} nats, from one run each.", ""]  # fmt: skip
    return lines


# ---------------------------------------------------------------------------------------------- variants
def variant_section(plan: P.Plan, rows: list[dict[str, Any]], fig_dir: Path, out: Path) -> list[str]:
    if not rows:
        return ["The variant study has not run yet (`--stages variants`).", ""]
    trials = P.variant_trials(plan.trials)
    by = {v: {r["trial"]: r for r in rows if r["variant"] == v} for v in P.VARIANTS}
    done = {v: {k: r["test"] if r["status"] == "completed" and r["test"] is not None else math.inf
                for k, r in runs.items()} for v, runs in by.items()}  # fmt: skip
    complete = [v for v in P.VARIANTS if len(done[v]) == plan.trials]
    lines = [f"{len(rows)} of {len(P.VARIANTS) * plan.trials} trials finished "
             f"({len(complete)} variants complete with {plan.trials} trials each).", ""]  # fmt: skip
    lines += ["The trials (the same for every variant):", ""]
    lines += table(
        ["trial", *[str(k) for k in range(1, plan.trials + 1)]],
        [["learning rate", *[f"{lr:g}" for lr, _ in trials]], ["hidden size", *[h for _, h in trials]]],
    )
    body = []
    base = {b: done.get(b, {}) for b in ("peephole", "standard")}
    for v in P.VARIANTS:
        values = sorted(done[v].values())
        finite = [x for x in values if math.isfinite(x)]
        if not values:
            continue
        top = values[: max(1, len(values) // 2)]
        row = [f"`{v}` ({P.PAPER_NAMES[v]})", len(values), len(values) - len(finite), f3(statistics.median(values))
               if finite else "-", f3(statistics.median(top)), f3(values[0])]  # fmt: skip
        for ref in ("peephole", "standard"):
            if v == ref or len(set(done[v]) & set(base[ref])) < 2:
                row.append("-")
                continue
            med, wins, n, p = paired(done, v, ref)
            row.append(f"{med:+.3f} (better in {wins}/{n}, p = {p:.2g})")
        body.append(row)
    lines += ["Test NLL (nats per step) of each variant over its trials; a trial that diverged counts as the worst "
              "value. The comparisons pair each trial with the same trial (same learning rate and hidden size) of "
              "the reference: the median of the paired differences (negative: the variant is better), how many "
              "trials it wins, and the two-sided Wilcoxon signed-rank p-value.", ""]  # fmt: skip
    lines += table(["variant (Greff et al.)", "trials", "diverged", "median test NLL", "median of the better half",
                    "best", "vs V (`peephole`)", "vs NP (`standard`)"], body)  # fmt: skip
    lines += greff_verdicts(done)
    lines += ["How this study differs from theirs, and what that can change: Greff et al. drew 200 trials per variant "
              "(learning rate, hidden size, momentum, input noise), trained each with SGD and momentum until "
              "early stopping, and judged the variants on the distribution of those trials; here 10 trials per "
              "variant, Adam with gradient clipping, and a fixed budget of "
              f"{plan.epochs or P.VARIANT_EPOCHS} epochs. A fixed budget rewards variants that learn fast as well as "
              "variants that end better: the trials with small learning rates (the upper points of each box) have "
              "not converged, and their ranking says more about speed than about the final NLL. Adam and "
              "clipping also tame variants whose unbounded activations (NOAF: h = o ⊙ c; NIAF: g = a_g) can "
              "diverge under plain SGD, a failure that weighs in a 200-trial distribution with large learning "
              "rates.", ""]  # fmt: skip
    fig = variant_figure(done, fig_dir)
    if fig:
        lines += [f"![test NLL of every trial per variant]({rel_to(fig, out)})", ""]
    return lines


def paired(done: dict[str, dict[int, float]], variant: str, ref: str) -> tuple[float, int, int, float]:
    """(median paired difference, trials the variant wins, common trials, Wilcoxon p) of a variant against ``ref``."""
    from scipy import stats

    common = sorted(set(done[variant]) & set(done[ref]))
    diffs = [done[variant][k] - done[ref][k] for k in common]
    finite = [d for d in diffs if math.isfinite(d)]
    try:
        p = float(stats.wilcoxon([done[variant][k] for k in common], [done[ref][k] for k in common]).pvalue)
    except ValueError:
        p = math.nan
    return (statistics.median(finite) if finite else math.nan), sum(d < 0 for d in diffs), len(common), p


def greff_verdicts(done: dict[str, dict[int, float]]) -> list[str]:
    """Greff et al.'s finding held against ours, variant by variant, against the vanilla LSTM (V = peephole)."""
    if len(done.get("peephole", {})) < 2:
        return []
    out = [
        'Against the paper (the vanilla LSTM V is `peephole`; "worse" and "better" below mean a paired '
        "Wilcoxon p < 0.05 and the median difference's sign; otherwise no difference these trials resolve):",
        "",
    ]
    for variant, claim in [*[(v, "hurts") for v in GREFF_HURTS], *[(v, "harmless") for v in GREFF_HARMLESS]]:
        if len(done.get(variant, {})) < 2:
            continue
        med, wins, n, p = paired(done, variant, "peephole")
        verdict = ("worse" if med > 0 else "better") if p < 0.05 else "no resolved difference"
        agrees = (verdict == "worse") if claim == "hurts" else (verdict != "worse")
        paper = "hurts (significantly worse)" if claim == "hurts" else "does not hurt"
        out.append(f"- `{variant}` ({P.PAPER_NAMES[variant]}): the paper: {paper}; here {verdict} (median "
                   f"{med:+.3f} nats, better in {wins} of {n} trials, p = {p:.2g}): "
                   f"**{'agrees' if agrees else 'disagrees'}**.")  # fmt: skip
    others = [v for v in P.VARIANTS if v not in (*GREFF_HURTS, *GREFF_HARMLESS, "peephole") and len(done[v]) > 1]
    for variant in others:
        med, wins, n, p = paired(done, variant, "peephole")
        verdict = ("worse" if med > 0 else "better") if p < 0.05 else "no resolved difference"
        against = verdict if verdict == "no resolved difference" else f"{verdict} than V"
        out.append(f"- `{variant}` ({P.PAPER_NAMES[variant]}; not among the findings held against ours): here "
                   f"{against} (median {med:+.3f} nats, better in {wins} of {n} trials, p = {p:.2g}).")  # fmt: skip
    return [*out, ""]


def rel_to(path: Path, out: Path) -> str:
    return path.relative_to(out).as_posix() if path.is_relative_to(out) else str(path)


def variant_figure(done: dict[str, dict[int, float]], fig_dir: Path) -> Path | None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    variants = [v for v in P.VARIANTS if done[v]]
    if not variants:
        return None
    fig, ax = plt.subplots(figsize=(8, 4))
    data = [[x for x in done[v].values() if math.isfinite(x)] for v in variants]
    ax.boxplot([d or [math.nan] for d in data], showfliers=False)
    for i, d in enumerate(data, 1):
        ax.scatter([i + (k - len(d) / 2) * 0.02 for k in range(len(d))], d, s=10, color="tab:blue", alpha=0.7, zorder=3)
    ax.set_xticks(range(1, len(variants) + 1), [f"{v}\n({P.PAPER_NAMES[v]})" for v in variants], fontsize=8)
    ax.set_ylabel("test NLL (nats per step)")
    ax.set_title("LSTM variants on the JSB chorales: every trial (random learning rate and hidden size)")
    if done.get("peephole"):
        finite = [x for x in done["peephole"].values() if math.isfinite(x)]
        if finite:
            ax.axhline(statistics.median(finite), color="grey", lw=0.8, ls="--", label="median of V (peephole)")
            ax.legend(fontsize=8)
    fig.tight_layout()
    path = fig_dir / "variants.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def tables_figure(seeds: Any, fig_dir: Path, name: str) -> Path | None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if seeds is None:
        return None
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.4), sharey=False)
    for ax, setting in zip(axes, ("chung", "bai"), strict=True):
        for i, cell in enumerate(P.CELLS):
            ax.scatter([i - 0.2], [P.PUBLISHED[(setting, cell)]], marker="s", color="black",
                       label="published" if i == 0 else None)  # fmt: skip
            for off, backend, color in ((0.0, "torch", "tab:orange"), (0.2, "numpy", "tab:blue")):
                s = stat(seeds, (setting, cell), backend)
                if s:
                    err = (s["high"] - s["mean"]) if s["n"] > 1 else 0
                    ax.errorbar([i + off], [s["mean"]], yerr=[err], fmt="o", color=color, capsize=3,
                                label=f"rnnlab {backend} (mean, 95 %)" if i == 0 else None)  # fmt: skip
        ax.set_xticks(range(len(P.CELLS)), P.CELLS)
        ax.set_title(P.SETTING_NAMES[setting], fontsize=9)
        ax.set_ylabel("test NLL (nats per step)")
        ax.grid(axis="y", alpha=0.3)
    axes[0].legend(fontsize=7)
    fig.tight_layout()
    path = fig_dir / f"{name}.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def curves_figure(rows: list[dict[str, Any]], fig_dir: Path) -> Path | None:
    """val/nll per epoch of each preset, seed 1, both backends."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import pandas as pd

    fig, axes = plt.subplots(1, 2, figsize=(9, 3.4))
    drawn = False
    for ax, setting in zip(axes, ("chung", "bai"), strict=True):
        for cell, color in zip(P.CELLS, ("tab:green", "tab:purple", "tab:red"), strict=True):
            for r in rows:
                if (r["setting"], r["cell"]) != (setting, cell) or r["seed"] != 1 or r["status"] != "completed":
                    continue
                csv = Path(r["dir"]) / "csv" / "metrics.csv"
                if not csv.is_file():
                    continue
                frame = pd.read_csv(csv)
                val = frame[["epoch", "val/nll"]].dropna() if "val/nll" in frame else None
                if val is None or not len(val):
                    continue
                ax.plot(val["epoch"] + 1, val["val/nll"], color=color, lw=1.4 if r["backend"] == "torch" else 0.9,
                        ls="-" if r["backend"] == "torch" else "--", label=f"{cell} {r['backend']}")  # fmt: skip
                drawn = True
        ax.set_ylim(8.0, 11.5)
        ax.set_xlabel("epoch")
        ax.set_ylabel("val/nll")
        ax.set_title(P.SETTING_NAMES[setting], fontsize=9)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    path = fig_dir / "val_curves.png"
    if drawn:
        fig.savefig(path, dpi=110)
    plt.close(fig)
    return path if drawn else None


# ---------------------------------------------------------------------------------------------- the whole report
def every_run(rows: list[dict[str, Any]]) -> list[str]:
    body = []
    for r in sorted(rows, key=lambda r: (r["setting"], P.CELLS.index(r["cell"]), r["backend"], r["seed"])):
        body.append([f"`{P.PRESETS[(r['setting'], r['cell'])]}`", r["backend"], r["seed"], r["status"],
                     f3(r["val"]), f3(r["test"]), f3(r["frame_acc"]),
                     f"{r['best_epoch']} / {r['epochs']}" if r["best_epoch"] else "-",
                     f"{r['step_ms']:.0f}" if r["step_ms"] else "-", f"{r['wall_min']:.1f}"])  # fmt: skip
    return table(["preset", "backend", "seed", "status", "best val/nll", "test/nll", "test/frame_acc",
                  "best epoch / epochs", "step ms", "wall min"], body)  # fmt: skip


def stage_times(work: Path) -> list[str]:
    path = work / "stages.jsonl"
    if not path.is_file():
        return []
    out = []
    for line in path.read_text().splitlines():
        r = json.loads(line)
        out.append(f"- stage `{r['stage']}`: {r['runs']} runs ({r['skipped']} finished before) in {r['minutes']:.1f} "
                   f"min, {r['jobs']} at a time, started {r['started']}")  # fmt: skip
    return [*out, ""] if out else []


def versions() -> str:
    import importlib.metadata as md

    def v(name: str) -> str:
        try:
            return md.version(name)
        except md.PackageNotFoundError:
            return "-"

    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=P.ROOT, capture_output=True, text=True)
    return (f"commit {commit.stdout.strip() or '-'}, Python {platform.python_version()}, numpy {v('numpy')}, "
            f"torch {v('torch')}, lightning {v('lightning')}, music21 {v('music21')}")  # fmt: skip


def write_report(plan: P.Plan, out: Path, args: Any, elapsed: float) -> None:
    """Write ``out``/README.md and ``out``/figures atomically (a temporary sibling, then renamed)."""
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    fig_dir = tmp / "figures"
    fig_dir.mkdir()
    standard = seed_tables(plan, "standard")
    embedded = seed_tables(plan, "embedded")
    quick = " --quick" if args.quick else ""
    lines = [
        "# rnnlab against published results: the JSB chorales",
        "",
        "Polyphonic music on the JSB chorales (task=polyphonic, data=jsb_chorales): the tables of Chung et al. "
        "(2014, Table 2: ~20K parameters) and Bai, Kolter & Koltun (2018, Table 1: ~300K parameters), both backends, "
        "and the LSTM variant study in the manner of Greff et al. (2017). NLL: nats per predicted time step, summed "
        "over the 88 keys, the published definition (mean over the test chorales' steps; task=polyphonic).",
        "",
        "Regenerate everything (resumable: a finished run is skipped, an interrupted one resumes):",
        "",
        "```bash",
        f"bash scripts/reproduce_published.sh{quick}                      # all stages",
        f"bash scripts/reproduce_published.sh{quick} --stages report      # this file from the finished runs",
        "```",
        "",
        f"Standard split: `--data-path {rel(plan.data_path) if plan.data_path else '-'}` (train 229, valid 76, "
        "test 77 chorales). Embedded split: music21's Bach chorales, rnnlab's seeded split (`data=jsb_chorales` "
        "without `data.path`).",
        "",
        f"Written {time.strftime('%d %b %Y %H:%M UTC', time.gmtime())}; {versions()}. {args.conditions}".rstrip(),
        "",
    ]
    if args.quick:
        lines += ["**A --quick miniature** (3 epochs of 5 batches, 2 seeds, 1 in the noise and embedded stages, 2 "
                  "candidates, 2 trials): it exercises every stage, its numbers mean nothing.", ""]  # fmt: skip
    lines += stage_times(plan.work)
    lines += ["## The protocol", "",
              "Every run: one layer, 8 chorales per batch, one thread, the test split scored once with the checkpoint "
              "of the best val/nll (early stopping by selection: the run goes on to its epoch budget, the best epoch "
              "is kept). Seeds set the initial weights and the batch order; both backends draw the same initial "
              "weights for a seed.", "",
              "- **Chung et al. 2014** (`experiment=jsb_chung_{rnn,gru,lstm}`): tanh RNN 100 units, GRU 46 "
              "(`model.variant=cho2014`: the reset before the recurrent product), LSTM 36 (`model.variant=peephole`). "
              "RMSprop, gradient norm clipped at 1, 40 epochs, the learning rate chosen on val/nll from 8 log-uniform "
              "candidates in 10^[-3.5, -1.5] (seed 1, NumPy backend; they drew 10 candidates). Left out of the tables: "
              "their weight noise (σ = 0.075; rnnlab has it as `model.weight_noise`, and the stage `noise` trains the "
              "three presets with it at the chosen rates, below); not followed: their candidate range (they sampled "
              "rates for their own RMSprop and number of updates).",
              "- **Bai, Kolter & Koltun 2018** (`experiment=jsb_{rnn,gru,lstm}`): ~300K parameters, one layer: RNN "
              "465 tanh units, GRU 262, LSTM 224. Adam, gradient norm clipped at 5. The paper states only a grid "
              "search for the recurrent baselines; the LSTM and GRU keep the presets of the music issue (lr 3e-3, "
              "60 / 50 epochs, experiments/jsb_chorales), the RNN's learning rate is chosen like Chung's from 5 "
              "log-uniform candidates in 10^[-4, -2.5], 60 epochs.",
              "- **Seeds**: 3 per configuration and backend (the NumPy run of seed 1 of a searched preset is its "
              "search run). Mean ± sample standard deviation [95 % t interval of the mean], computed by "
              "`rnnlab-report`'s aggregation (`rnnlab/report/seeds.py`).", ""]  # fmt: skip
    lines += [
        "One run of the tables by hand (each preset holds its chosen learning rate; `model.backend=numpy` for "
        "the other backend, `seed=` for another seed), and the first trial of the variant study:",
        "",
        "```bash",
    ]
    data = rel(plan.data_path) if plan.data_path else "jsb-chorales-quarter.json"
    lines += [
        f"rnnlab-train experiment={P.PRESETS[k]} data.path={data} seed=1 threads=1"
        for k in [(s, c) for s in ("chung", "bai") for c in P.CELLS]
    ]
    lr, hidden = P.variant_trials(1)[0]
    lines += [f"rnnlab-train experiment=jsb_lstm model.variant=cifg model.hidden_size={hidden} optimizer.lr={lr} "
              f"trainer.max_epochs={P.VARIANT_EPOCHS} model.backend=numpy data.path={data} seed=1 threads=1",
              "```", ""]  # fmt: skip
    lines += ["## The learning-rate search (val/nll of every candidate; the chosen one in bold)", ""]
    lines += search_section(plan)
    rows, seeds, paired = standard
    lines += ["## The tables, standard split", ""]
    if rows:
        table_lines, checks = main_table(rows, seeds, paired)
        lines += table_lines
        fig = tables_figure(seeds, fig_dir, "tables_standard")
        if fig:
            lines += [f"![published and rnnlab test NLL]({rel_to(fig, tmp)})", ""]
        lines += ["### Against the issue's numbers", ""] + [f"- {c}" for c in checks] + [""]
        lines += ["### The ordering of the cells", ""]
        lines += [f"- {o.strip()}" if not o.startswith("  ") else f"  - {o.strip()}" for o in ordering(seeds)] + [""]
        lines += ordering_section(plan)
        notes = observations(plan, rows)
        if notes:
            lines += ["### What the runs say about the protocol", ""] + [f"- {n}" for n in notes] + [""]
        lines += ["### NumPy against PyTorch, paired by seed", "", *paired_table(paired)]
        curves = curves_figure(rows, fig_dir)
        if curves:
            lines += [f"![val/nll per epoch, seed 1]({rel_to(curves, tmp)})", ""]
    else:
        lines += ["Not run yet (`--stages search,tables`).", ""]
    lines += noise_section(plan, seeds)
    rows_e, seeds_e, paired_e = embedded
    lines += ["## The same configurations on the embedded split (music21)", ""]
    if rows_e:
        table_lines, _ = main_table(rows_e, seeds_e, paired_e)
        lines += ["The published figures are for the standard split; this split has none. Shown to judge how "
                  "far the embedded data stands in for the standard file.", "", *table_lines]  # fmt: skip
        lines += ["NumPy against PyTorch, paired by seed:", "", *paired_table(paired_e)]
    else:
        lines += ["Not run yet (`--stages embedded`).", ""]
    lines += ["## The LSTM variant study (Greff et al. 2017)", ""]
    lines += [f"The nine variants of `model=lstm model.variant=...` (docs/cells.md), each trained with the same "
              f"{plan.trials} seeded random trials: learning rate 10^U(-3.5, -1.5), hidden size log-uniform in "
              f"[20, 200], Adam, gradient norm clipped at 5, {plan.epochs or P.VARIANT_EPOCHS} epochs, best val/nll "
              "checkpoint scored on test, NumPy backend (its variants run faster than torch's reference cells; "
              "both are held equal by the parity tests), standard split. Greff et al. drew 200 trials per "
              "variant with SGD and momentum; this is their design at a twentieth of the budget.", ""]  # fmt: skip
    vrows = P.collect(plan, P.variant_jobs(plan))
    lines += variant_section(plan, vrows, fig_dir, tmp)
    lines += ["## Every run, standard split", "", *every_run(rows)]
    if rows_e:
        lines += ["## Every run, embedded split", "", *every_run(rows_e)]
    (tmp / "README.md").write_text("\n".join(lines).rstrip() + "\n")
    if out.exists():
        old = out.with_name(f".{out.name}.old")
        if old.exists():
            shutil.rmtree(old)
        out.rename(old)
        tmp.rename(out)
        shutil.rmtree(old)
    else:
        tmp.rename(out)
    print(f"report: {out / 'README.md'} ({elapsed / 60:.1f} min)", flush=True)
