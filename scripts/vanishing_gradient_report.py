"""Write the vanishing-gradient study report from a finished `experiment=vanishing_gradient` multirun.

    rnnlab-train experiment=vanishing_gradient                      # 9 jobs: rnn, lstm, gru x length 10, 50, 100
    .venv/bin/python scripts/vanishing_gradient_report.py outputs/multiruns/<time> --out experiments/vanishing_gradient

For every job it reads the resolved config and the CSV metrics (test MSE of the best validation checkpoint, the
constant-mean baseline), and from the best checkpoint it computes ||dL/dh_t|| for every timestep on the first 32
test sequences (rnnlab.analysis.hidden_gradient_norms, the NumPy glass box at the trained weights). It writes one
figure per length with the three cells' curves, and a Markdown table; the directory is replaced atomically.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

SOLVED_MSE = 0.01  # well below the 0.167 baseline: the network carries both values to the end


def read_job(job: Path) -> dict[str, Any]:
    import pandas as pd
    import yaml

    cfg = yaml.safe_load((job / "config_resolved.yaml").read_text())
    metrics = pd.read_csv(job / "csv" / "metrics.csv")
    test = metrics[["test/mse", "test/mse_baseline"]].dropna().iloc[-1]
    steps = metrics["time/step_ms"].dropna()
    best = sorted((job / "checkpoints").glob("best-*.ckpt"))
    return {
        "job": job,
        "cfg": cfg,
        "cell": cfg["model"]["cell"],
        "backend": cfg["model"]["backend"],
        "length": int(cfg["data"]["length"]),
        "test_mse": float(test["test/mse"]),
        "baseline": float(test["test/mse_baseline"]),
        "best_val_mse": float(metrics["val/mse"].dropna().min()),
        "step_ms": float(steps.median()) if len(steps) else float("nan"),
        "ckpt": best[-1] if best else job / "checkpoints" / "last.ckpt",
    }


def gradient_curve(run: dict[str, Any], n: int = 32) -> Any:
    import numpy as np
    import torch

    from rnnlab.analysis import hidden_gradient_norms
    from rnnlab.data.sequences import AddingDataModule
    from rnnlab.tasks.regress import RegressTask

    d = run["cfg"]["data"]
    dm = AddingDataModule(d["length"], d["num_train"], d["num_val"], d["num_test"], d["generator_seed"], batch_size=n)
    dm.setup("test")
    x, y = dm.splits["test"].collate(list(range(n)))
    task = RegressTask.load_from_checkpoint(run["ckpt"], map_location="cpu")
    with torch.no_grad():
        norms = hidden_gradient_norms(task, (x, y))
    return np.asarray(norms[0])


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("sweep", type=Path, help="the multirun directory (outputs/multiruns/<time>)")
    p.add_argument("--out", type=Path, default=Path("experiments/vanishing_gradient"))
    args = p.parse_args(argv)
    jobs = sorted(j for j in args.sweep.iterdir() if (j / "config_resolved.yaml").is_file())
    if not jobs:
        p.error(f"no finished jobs under {args.sweep}")
    import numpy as np

    from rnnlab.plots import new_figure

    runs = [read_job(j) for j in jobs]
    cells = [c for c in ("rnn", "lstm", "gru") if any(r["cell"] == c for r in runs)]
    lengths = sorted({r["length"] for r in runs})
    from rnnlab.atomic import replace_dir

    with replace_dir(args.out) as tmp:
        figures = []
        for length in lengths:
            fig = new_figure(6.5, 3.8)
            ax = fig.add_subplot()
            for run in (r for r in runs if r["length"] == length):
                curve = gradient_curve(run)
                ax.semilogy(np.arange(1, length + 1), np.maximum(curve, 1e-30),
                            label=f"{run['cell']} (test MSE {run['test_mse']:.4f})")  # fmt: skip
            ax.set_xlabel("timestep t")
            ax.set_ylabel("||dL/dh_t||, 32 test sequences")
            ax.set_title(f"adding problem, length {length}: gradient reaching each step")
            ax.grid(True, which="both", alpha=0.3)
            ax.legend(fontsize=8)
            name = f"grad_through_time_T{length}.png"
            fig.savefig(tmp / name)
            figures.append((length, name))

        backend = ", ".join(sorted({r["backend"] for r in runs}))
        lines = [
            "# Vanishing gradients: the adding problem",
            "",
            "Regenerate: `rnnlab-train experiment=vanishing_gradient` (9 jobs; about 14 min on 2 CPU cores), then",
            f"`.venv/bin/python scripts/vanishing_gradient_report.py outputs/multiruns/<time> --out {args.out}`.",
            "",
            "Setting: `task=regress data=adding`, hidden 64, Adam (lr 0.002, torch's defaults otherwise), 10 epochs "
            f"of 10,000 sequences (1,570 steps), batch 64, backend {backend}, seed 42. Test MSE of the best validation "
            "checkpoint; predicting the constant mean scores the baseline (about 0.167). Solved: MSE < "
            f"{SOLVED_MSE}; partly: below half the baseline.",
            "",
            "| cell | " + " | ".join(f"length {n}" for n in lengths) + " |",
            "|---|" + "---|" * len(lengths),
        ]
        for cell in cells:
            row = []
            for length in lengths:
                run = next((r for r in runs if r["cell"] == cell and r["length"] == length), None)
                if run is None:
                    row.append("missing")
                    continue
                if run["test_mse"] < SOLVED_MSE:
                    verdict = "solved"
                elif run["test_mse"] < 0.5 * run["baseline"]:
                    verdict = "partly"
                else:
                    verdict = "at baseline"
                row.append(f"{run['test_mse']:.4f} ({verdict}; baseline {run['baseline']:.3f})")
            lines.append(f"| {cell} | " + " | ".join(row) + " |")
        lines += ["", "Median training step (`time/step_ms`; indicative only: other jobs shared the 2 cores at times):",
                  "", "| cell | " + " | ".join(map(str, lengths)) + " |", "|---|" + "---|" * len(lengths)]  # fmt: skip
        for cell in cells:
            cells_ms = [next((f"{r['step_ms']:.1f} ms" for r in runs if r["cell"] == cell and r["length"] == n), "-")
                        for n in lengths]  # fmt: skip
            lines.append(f"| {cell} | " + " | ".join(cells_ms) + " |")
        lines += [
            "",
            "## The gradient that reaches each timestep",
            "",
            "||dL/dh_t|| of the test loss at the trained weights, for every step t (the two marked values can be "
            "anywhere; the loss reads only the last hidden state). The vanilla RNN's gradient shrinks by a roughly "
            "constant factor per step on its way back, so the early marked value gets no learning signal; the LSTM's "
            "additive cell path and the GRU's update gate keep it within a few orders of magnitude.",
            "",
        ]
        lines += [f"![length {n}]({name})" for n, name in figures]
        (tmp / "README.md").write_text("\n".join(lines) + "\n")
    print(f"wrote {args.out}/README.md and {len(figures)} figures")
    return 0


if __name__ == "__main__":
    sys.exit(main())
