"""The JSB chorales presets measured: experiment=jsb_lstm and experiment=jsb_gru, both backends, several seeds, on the
standard split (data.path=) or the embedded music21 split; writes experiments/jsb_chorales/README.md.

    python scripts/jsb_chorales.py --data-path ../shared/data/jsb_chorales/jsb-chorales-quarter.json --jobs 2
    python scripts/jsb_chorales.py --from-sweep outputs/jsb_chorales/<stamp>      # the report of finished runs
    python scripts/jsb_chorales.py --smoke --data-path tiny.json                  # a miniature, into a temp dir

One Hydra multirun per preset (``model.backend=torch,numpy seed=...``), each job on one thread (``threads=1``), two
jobs at a time with ``--jobs 2``. A sweep directory that already holds a finished job for a (preset, backend, seed)
is reused with ``--from-sweep``; the report reads every summary.json below it. The report gives, per preset and
backend, each seed's best val/nll, test/nll (scored with the best val/nll checkpoint), test/frame_acc, the epoch
of the best checkpoint and the wall time, then the mean and standard deviation over seeds, and checks the targets
of the issue: torch's test/nll at most 8.70 (LSTM) and 8.68 (GRU) in every seed, NumPy's mean within
max(0.05, 2 x std) of torch's.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
PRESETS = {"lstm": "jsb_lstm", "gru": "jsb_gru"}
TARGETS = {"lstm": 8.70, "gru": 8.68}  # the limits on the standard split (torch, every seed)
PUBLISHED = {"lstm": 8.45, "gru": 8.43}  # Bai, Kolter & Koltun 2018, Table 1
SMOKE = ("trainer.max_epochs=2", "data.batch_size=4", "model.hidden_size=8", "task.sample_length=4")


def run_preset(cell: str, sweep: Path, data_path: str | None, seeds: list[int], jobs: int, extra: list[str]) -> int:
    cmd = [sys.executable, "-m", "rnnlab", "-m", f"experiment={PRESETS[cell]}", "model.backend=torch,numpy",
           f"seed={','.join(map(str, seeds))}", "threads=1", f"hydra.sweep.dir={sweep}"]  # fmt: skip
    if data_path:
        cmd.append(f"data.path={Path(data_path).resolve()}")
    if jobs > 1:
        cmd += ["hydra/launcher=joblib", f"hydra.launcher.n_jobs={jobs}"]
    cmd += extra
    sweep.parent.mkdir(parents=True, exist_ok=True)
    log = sweep.parent / f"{sweep.name}.log"
    print(f"[{cell}] {shlex.join(cmd[1:])}  (log {log})", flush=True)
    t0 = time.perf_counter()
    with log.open("w") as fh:
        done = subprocess.run(cmd, cwd=ROOT, env={**os.environ, "OMP_NUM_THREADS": "1"}, stdout=fh,
                              stderr=subprocess.STDOUT)  # fmt: skip
    print(f"[{cell}] finished in {(time.perf_counter() - t0) / 60:.1f} min, exit {done.returncode}", flush=True)
    return done.returncode


def load(sweeps: list[Path]) -> list[dict[str, Any]]:
    """One record per finished job below the sweep directories."""
    import yaml

    rows = []
    for sweep in sweeps:
        for summary in sorted(sweep.rglob("summary.json")):
            s = json.loads(summary.read_text())
            cfg = yaml.safe_load((summary.parent / "config_resolved.yaml").read_text())
            curve = epochs_of_best(summary.parent)
            rows.append({
                "cell": cfg["model"]["cell"], "backend": s["backend"], "seed": int(s["seed"]),
                "status": s["status"], "val": s["optimized_value"], "test": s["test_metrics"].get("test/nll"),
                "frame_acc": s["test_metrics"].get("test/frame_acc"), "wall_min": s["wall_s"] / 60,
                "step_ms": s.get("step_ms_median"), "params": s["num_params"], "epochs": s["epochs"],
                "best_epoch": curve, "data_path": cfg["data"].get("path"), "hidden": cfg["model"]["hidden_size"],
                "dir": summary.parent,
            })  # fmt: skip
    return rows


def epochs_of_best(run_dir: Path) -> int | None:
    """The epoch (1-based) of the best val/nll, from the run's CSV log."""
    import pandas as pd

    csv = run_dir / "csv" / "metrics.csv"
    if not csv.is_file():
        return None
    frame = pd.read_csv(csv)
    if "val/nll" not in frame:
        return None
    val = frame[["epoch", "val/nll"]].dropna()
    return int(val.loc[val["val/nll"].idxmin(), "epoch"]) + 1 if len(val) else None


def fmt(value: Any, digits: int = 3) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def report(rows: list[dict[str, Any]], out: Path, command: str, smoke: bool, conditions: str = "") -> str:
    lines = ["# Polyphonic music: the JSB chorales presets on both backends", ""]
    if smoke:
        lines += ["**A smoke run** (tiny settings): the numbers mean nothing.", ""]
    paths = sorted({os.path.relpath(r["data_path"], ROOT) if r["data_path"] else "None" for r in rows})
    lines += [
        "`experiment=jsb_lstm` and `experiment=jsb_gru` (conf/experiment/), the ~300K-parameter setting of Bai, Kolter "
        "& Koltun (2018, Table 1), trained with `rnnlab-train` on each backend and seed, one thread per job, two jobs "
        "at a time on the project's 2-core machine. The test split is scored once per run, with the checkpoint of "
        "the best val/nll. NLL: nats per predicted step, summed over the 88 keys (the published definition).",
        "",
        f"Data: {', '.join(f'`data.path={p}`' if p != 'None' else 'the embedded music21 split' for p in paths)}.",
        "",
        "Command:",
        "",
        "```bash",
        command,
        "```",
        "",
        *([conditions, ""] if conditions else []),
        "The wall time is the whole `rnnlab-train` job (data, training with a validation per epoch, the test); "
        "`step ms` is the median training step (`time/step_ms`).",
        "",
        "## Every run",
        "",
        "| preset | backend | seed | params | best val/nll | test/nll | test/frame_acc | best epoch / epochs | "
        "step ms | wall min | status |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    rows = sorted(rows, key=lambda r: (r["cell"] != "lstm", r["backend"] != "torch", r["seed"]))
    for r in rows:
        lines.append(
            f"| jsb_{r['cell']} | {r['backend']} | {r['seed']} | {r['params']:,} | {fmt(r['val'])} | "
            f"{fmt(r['test'])} | {fmt(r['frame_acc'])} | {r['best_epoch'] or '-'} / {r['epochs']} | "
            f"{fmt(r['step_ms'], 1)} | {r['wall_min']:.1f} | {r['status']} |"
        )
    lines += ["", "## Over the seeds", "",
              "| preset | backend | seeds | test/nll mean | std | min | max | published | target (torch, every seed) | "
              "longest wall min |", "|---|---|---|---|---|---|---|---|---|---|"]  # fmt: skip
    verdicts = []
    for cell in ("lstm", "gru"):
        means = {}
        for backend in ("torch", "numpy"):
            got = [r for r in rows if r["cell"] == cell and r["backend"] == backend and r["test"] is not None]
            if not got:
                continue
            tests = [r["test"] for r in got]
            mean = statistics.fmean(tests)
            std = statistics.stdev(tests) if len(tests) > 1 else 0.0
            means[backend] = (mean, std, tests)
            lines.append(
                f"| jsb_{cell} | {backend} | {len(tests)} | {mean:.3f} | {std:.3f} | {min(tests):.3f} | "
                f"{max(tests):.3f} | {PUBLISHED[cell]} | <= {TARGETS[cell]} | {max(r['wall_min'] for r in got):.1f} |"
            )
        if "torch" in means:
            mean, std, tests = means["torch"]
            hits = sum(t <= TARGETS[cell] for t in tests)
            verdicts.append(f"- jsb_{cell}, torch: test/nll <= {TARGETS[cell]} in {hits} of {len(tests)} seeds "
                            f"({'met' if hits == len(tests) else 'NOT met'}).")  # fmt: skip
        if "torch" in means and "numpy" in means:
            (tm, ts, _), (nm, _, _) = means["torch"], means["numpy"]
            limit = max(0.05, 2 * ts)
            met = "met" if abs(nm - tm) <= limit else "NOT met"
            verdicts.append(f"- jsb_{cell}, NumPy mean {nm:.3f} against torch's {tm:.3f}: difference {nm - tm:+.3f}, "
                            f"limit max(0.05, 2 x {ts:.3f}) = {limit:.3f} ({met}).")  # fmt: skip
    lines += ["", "## Against the targets", "", *verdicts, ""]
    out.mkdir(parents=True, exist_ok=True)
    text = "\n".join(lines)
    (out / "README.md").write_text(text)
    return text


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--data-path", help="the standard split (JSON or pickle); default: the embedded music21 split")
    p.add_argument("--seeds", default="1,2,3")
    p.add_argument("--cells", default="lstm,gru")
    p.add_argument("--jobs", type=int, default=1)
    p.add_argument("--work", type=Path, default=None, help="where sweeps go (default outputs/jsb_chorales)")
    p.add_argument("--out", type=Path, default=None, help="where the report goes (default experiments/jsb_chorales)")
    p.add_argument("--from-sweep", type=Path, action="append", help="report finished sweeps (repeatable); no runs")
    p.add_argument("--smoke", action="store_true", help="tiny settings into a temporary directory (a test)")
    p.add_argument("--conditions", default="", help="a sentence on the machine's state, for the report")
    args, extra = p.parse_known_args(argv)
    seeds = [int(s) for s in args.seeds.split(",")]
    cells = [c for c in args.cells.split(",") if c]
    unknown = [c for c in cells if c not in PRESETS]
    if unknown:
        p.error(f"--cells: unknown {unknown[0]!r} (lstm, gru)")
    work = args.work or (
        Path(tempfile.mkdtemp(prefix="rnnlab-jsb-smoke-")) if args.smoke else ROOT / "outputs" / "jsb_chorales"
    )
    out = args.out or (work / "report" if args.smoke else ROOT / "experiments" / "jsb_chorales")
    flags = [*(["--data-path", args.data_path] if args.data_path else []), "--seeds", args.seeds, "--cells",
             args.cells, *(["--jobs", str(args.jobs)] if args.jobs > 1 else [])]  # fmt: skip
    flags += ["--smoke"] if args.smoke else []
    command = "python scripts/jsb_chorales.py " + shlex.join([*flags, *extra])
    status = 0
    if args.from_sweep:
        sweeps = list(args.from_sweep)
    else:
        stamp = time.strftime("%Y-%m-%d_%H-%M-%S")
        sweeps = []
        for cell in cells:
            sweep = work / stamp / cell
            code = run_preset(cell, sweep, args.data_path, seeds, args.jobs, [*(SMOKE if args.smoke else ()), *extra])
            status = status or int(code != 0)
            sweeps.append(sweep)
    rows = load(sweeps)
    if not rows:
        print(f"jsb_chorales: no finished runs below {', '.join(map(str, sweeps))}", file=sys.stderr)
        return 1
    print(report(rows, out, command, args.smoke, args.conditions))
    print(f"\nwrote {out / 'README.md'}")
    return status


if __name__ == "__main__":
    sys.exit(main())
