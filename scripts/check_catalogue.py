"""Every task x data pair of the catalogue, on both backends, from the real command line: a few training steps,
a short validation and test, then a check that each job logged its task's metric.

    .venv/bin/python scripts/check_catalogue.py            # every task x data pair x 2 backends, one multirun per row
    .venv/bin/python scripts/check_catalogue.py --keep DIR # keep the runs in DIR (default: a temporary dir)
    .venv/bin/python scripts/check_catalogue.py --list     # print the rows (the commands) and run nothing

The rows come from the registries (rnnlab.registry): for every registered task, the registered data of the kind
it accepts, one `rnnlab-train -m` per group of data that share their quick-run overrides (`quick` of the data's
registration: data=imdb,rt_sentences data.limit_samples=600) x model.backend=torch,numpy, so Lightning is imported
once per row; a plug-in task or dataset (`--plugins mod`) gets rows the same way. Prints one line per job (task,
data, backend, the metric its task monitors and its value) and exits 1 if any job failed or did not log its metric.
Not part of the test suite (32 jobs, 2 min 25 s on 2 cores on 6 Dec 2026); the suite runs the same pairs
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

# What the registries cannot know: a file for data that reads the user's own, a choice per task to exercise.
DATA_SETTINGS: dict[str, list[str]] = {"text_file": [f"data.path={ROOT / 'README.md'}"]}  # any UTF-8 text file
TASK_SETTINGS: dict[str, list[str]] = {"seq2seq": ["model.attention=additive,dot"]}
# Rows beyond one per task and data: another code path of a pair, with the metric it must log.
VARIANTS: list[tuple[str, str, list[str], str | None]] = [
    ("language_model", "shakespeare", ["data.tbptt=true"], "val/ppl"),
]


def catalogue(plugins: list[str] = ()) -> list[tuple[str, str, list[str], str | None]]:
    """(task, data options, extra overrides, metric every job must log: None for its own task.monitor) per row."""
    from rnnlab.registry import TASKS, import_plugins
    from rnnlab.specs import datasets_of, discover_builtins

    discover_builtins()
    import_plugins(list(plugins))
    rows: list[tuple[str, str, list[str], str | None]] = []
    for task in TASKS.entries():
        groups: dict[tuple[str, ...], list[str]] = {}
        for data in datasets_of(task):
            groups.setdefault((*data.meta.get("quick", ()), *DATA_SETTINGS.get(data.name, ())), []).append(data.name)
        for extra, names in groups.items():
            rows.append((task.name, ",".join(names), [*TASK_SETTINGS.get(task.name, ()), *extra], None))
    return rows + VARIANTS


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
    parser.add_argument("--list", action="store_true", help="print the rows and run nothing")
    parser.add_argument("--plugins", nargs="*", default=[], help="plug-in modules: their tasks and data get rows")
    args = parser.parse_args()
    rows = catalogue(args.plugins)
    plugins = [f"plugins=[{','.join(args.plugins)}]"] if args.plugins else []
    if args.list:
        for task, data, extra, _ in rows:
            print(" ".join(["rnnlab-train -m", f"task={task}", f"data={data}", *plugins, *extra]))
        return 0
    root = args.keep or Path(tempfile.mkdtemp(prefix="rnnlab-catalogue-"))
    train = Path(sys.executable).parent / "rnnlab-train"
    env = {**os.environ, "RNNLAB_OUTPUT_DIR": str(root), "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
    import pandas as pd
    import yaml

    failures = 0
    for i, (task, data, extra, metric) in enumerate(rows):
        sweep = root / f"{i}_{task}"
        overrides = [f"task={task}", f"data={data}", *plugins, "model.backend=torch,numpy", *COMMON, *extra]
        cmd = [str(train), "-m", *overrides, f"hydra.sweep.dir={sweep}"]
        done = subprocess.run(cmd, env=env, capture_output=True, text=True)
        if done.returncode != 0:
            failures += 1
            tail = (done.stderr.strip().splitlines() or ["(no output)"])[-1]
            print(f"FAILED  {task:15s} data={data}: exit {done.returncode}: {tail}")
            continue
        for job in sorted(p for p in sweep.iterdir() if (p / "config_resolved.yaml").is_file()):
            cfg = yaml.safe_load((job / "config_resolved.yaml").read_text())
            wanted = metric or cfg["task"]["monitor"]
            metrics = pd.read_csv(job / "csv" / "metrics.csv")
            values = metrics[wanted].dropna() if wanted in metrics else pd.Series(dtype=float)
            name = f"{task:15s} data={cfg['data']['name']:15s} backend={cfg['model']['backend']:6s}"
            if cfg["model"].get("attention", "none") != "none":
                name += f" attention={cfg['model']['attention']}"
            if values.empty:
                failures += 1
                print(f"FAILED  {name} logged no {wanted}")
            else:
                print(f"ok      {name} {wanted}={values.iloc[-1]:.4f}")
    print(f"{'all jobs logged their metric' if not failures else f'{failures} failure(s)'}; runs in {root}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
