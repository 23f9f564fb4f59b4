"""Every task x data pair of the catalogue, on both backends, from the real command line: a few training steps,
a short validation and test, then a check that each job logged its task's metric.

    .venv/bin/python scripts/check_catalogue.py            # every task x data pair x 2 backends, one multirun per row
    .venv/bin/python scripts/check_catalogue.py --keep DIR # keep the runs in DIR (default: a temporary dir)

One `rnnlab-train -m` per row of CATALOGUE (data=a,b x model.backend=torch,numpy), so Lightning is imported once per
row. Prints one line per job (task, data, backend, the metric and its value) and exits 1 if any job failed or
did not log its metric. Not part of the test suite (about 5 minutes on 2 cores); the suite runs the same pairs
in-process with fast_dev_run.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

# (task, data options, extra overrides, metric every job must log)
CATALOGUE: list[tuple[str, str, list[str], str]] = [
    ("language_model", "shakespeare", [], "val/bpc"),
    ("language_model", "text_file", [f"data.path={ROOT / 'README.md'}"], "val/bpc"),  # any UTF-8 text file
    ("language_model", "shakespeare", ["data.tbptt=true"], "val/ppl"),
    ("classify", "synthetic_text", [], "val/acc"),
    ("classify", "imdb", ["data.limit_samples=600"], "val/acc"),  # data.limit_samples: one data per row (Hydra
    ("classify", "rt_sentences", ["data.limit_samples=600"], "val/acc"),  # composes a sweep's base config first)
    ("forecast", "weather,stocks,airline", [], "val/mae"),
    ("tag", "ner_synth", [], "val/entity_f1"),
    ("tag", "copy", ["data.length=10"], "val/acc"),
    ("regress", "adding", ["data.length=10"], "val/mse"),
    ("seq2seq", "dates", ["model.attention=additive", "data.num_samples=600"], "val/bleu"),
    ("seq2seq", "cmudict", ["model.attention=dot", "data.limit_samples=600"], "val/bleu"),
]
COMMON = [
    "trainer.max_steps=3",
    "trainer.max_epochs=null",
    "trainer.limit_val_batches=2",
    "trainer.limit_test_batches=2",
    "trainer.log_every_n_steps=1",
    "trainer.enable_progress_bar=false",
    "model.hidden_size=16",
    "logger=csv",
]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--keep", type=Path, help="write the runs here instead of a temporary directory")
    args = parser.parse_args()
    root = args.keep or Path(tempfile.mkdtemp(prefix="rnnlab-catalogue-"))
    train = Path(sys.executable).parent / "rnnlab-train"
    env = {**os.environ, "RNNLAB_OUTPUT_DIR": str(root), "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
    import pandas as pd
    import yaml

    failures = 0
    for i, (task, data, extra, metric) in enumerate(CATALOGUE):
        sweep = root / f"{i}_{task}"
        overrides = [f"task={task}", f"data={data}", "model.backend=torch,numpy", *COMMON, *extra]
        cmd = [str(train), "-m", *overrides, f"hydra.sweep.dir={sweep}"]
        done = subprocess.run(cmd, env=env, capture_output=True, text=True)
        if done.returncode != 0:
            failures += 1
            tail = (done.stderr.strip().splitlines() or ["(no output)"])[-1]
            print(f"FAILED  {task:15s} data={data}: exit {done.returncode}: {tail}")
            continue
        for job in sorted(p for p in sweep.iterdir() if (p / "config_resolved.yaml").is_file()):
            cfg = yaml.safe_load((job / "config_resolved.yaml").read_text())
            metrics = pd.read_csv(job / "csv" / "metrics.csv")
            values = metrics[metric].dropna() if metric in metrics else pd.Series(dtype=float)
            name = f"{task:15s} data={cfg['data']['name']:15s} backend={cfg['model']['backend']:6s}"
            if values.empty:
                failures += 1
                print(f"FAILED  {name} logged no {metric}")
            else:
                print(f"ok      {name} {metric}={values.iloc[-1]:.4f}")
    print(f"{'all jobs logged their metric' if not failures else f'{failures} failure(s)'}; runs in {root}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
