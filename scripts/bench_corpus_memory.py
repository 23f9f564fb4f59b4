"""Memory and setup time of a character language model as its corpus grows: 1x and 10x the Shakespeare text.

    .venv/bin/python scripts/bench_corpus_memory.py                          # this checkout, 1x and 10x
    .venv/bin/python scripts/bench_corpus_memory.py --scales 1,10,30 --json outputs/corpus_memory.json
    .venv/bin/python scripts/bench_corpus_memory.py --source /tmp/rnnlab-old # another copy of the package

For each scale k the script writes ``<work>/corpus-<k>x.txt``, the Shakespeare text (``rnnlab.data.corpus.
shakespeare_path``) k times over, and measures in fresh subprocesses, each with an empty token cache:

* setup: ``CharCorpusDataModule`` for ``data=text_file`` (seq_len 100, batch 64), ``prepare_data`` and ``setup``
  on the empty cache (cold) and once more (warm, the cache from the cold run): the wall time of the two calls,
  the resident memory after the imports and the peak of the process (VmHWM) after setup;
* a short run: ``rnnlab-train data=text_file data.path=<file> trainer.max_steps=20`` (the default LSTM, 64 x 100
  windows; 5 validation and 5 test batches, ``logger=csv``): the fit's peak RSS (``peak_rss_mb`` of
  summary.json: PeakMemory resets the high-water mark when the fit starts), the child's ru_maxrss from wait4 and
  the run's wall time. On Linux that reset (/proc/self/clear_refs) also resets ru_maxrss, so it is the peak from
  the start of the fit to the exit (test and sample included); the setup measurement above covers the rest.

``--source DIR`` puts DIR first on the children's PYTHONPATH, so that they import the rnnlab package (and its
conf/) found there: a copy of an older commit, e.g. ``git archive <commit> rnnlab conf | tar -x -C DIR``, gives
its numbers for comparison. The children run with OMP_NUM_THREADS=1.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from rnnlab.atomic import write_text

ROOT = Path(__file__).resolve().parent.parent

SETUP_CHILD = r"""
import json, sys, time
def status_mb(field):
    for line in open("/proc/self/status"):
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
from rnnlab.data.datamodules import CharCorpusDataModule
import rnnlab.data.datamodules as dmmod
path, cache = sys.argv[1], sys.argv[2]
out = {"module": dmmod.__file__, "rss_imported_mb": status_mb("VmRSS"), "hwm_imported_mb": status_mb("VmHWM")}
for label in ("cold", "warm"):
    started = time.perf_counter()
    dm = CharCorpusDataModule("text_file", path, seq_len=100, val_fraction=0.05, test_fraction=0.05, batch_size=64,
                              cache_dir=cache)
    dm.prepare_data()
    dm.setup("fit")
    out[label + "_setup_s"] = time.perf_counter() - started
    out[label + "_hwm_mb"] = status_mb("VmHWM")
    x, y = next(iter(dm.train_dataloader()))
    assert tuple(x.shape) == (64, 100) and bool((x[:, 1:] == y[:, :-1]).all())
    out["vocab"] = len(dm.vocab)
    out["windows"] = {k: len(v) for k, v in dm.splits.items()}
    out["rss_after_mb"] = status_mb("VmRSS")
    del dm, x, y
print(json.dumps(out))
"""


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--scales", default="1,10", help="corpus sizes in multiples of the Shakespeare text (1,10)")
    p.add_argument("--steps", type=int, default=20, help="training steps of each run (20)")
    p.add_argument("--source", type=Path, default=None, help="import rnnlab from this directory instead")
    p.add_argument("--work", type=Path, default=None, help="corpora, caches and runs go here (a temp dir)")
    p.add_argument("--keep", action="store_true", help="keep --work (removed at the end when it is a temp dir)")
    p.add_argument("--json", type=Path, default=None, help="also write the results here")
    p.add_argument("--label", default=None, help="a name for these numbers in the output (the source)")
    return p.parse_args(argv)


def child_env(args: argparse.Namespace, cache: Path) -> dict[str, str]:
    env = dict(os.environ, OMP_NUM_THREADS="1", RNNLAB_CACHE_DIR=str(cache), PYTHONUNBUFFERED="1")
    if args.source is not None:
        env["PYTHONPATH"] = os.pathsep.join([str(args.source.resolve()), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    return env


def run_child(cmd: list[str], env: dict[str, str], log: Path) -> tuple[int, float, str]:
    """Run ``cmd``; (exit code, its peak RSS in MB from wait4, its stdout). stderr goes to ``log``."""
    with open(log, "w") as err, tempfile.TemporaryFile("w+") as out:
        proc = subprocess.Popen(cmd, env=env, stdout=out, stderr=err, cwd=log.parent)
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)  # reaped here: Popen must not wait for it again
        out.seek(0)
        stdout = out.read()
    peak_mb = usage.ru_maxrss / 1024 if sys.platform != "darwin" else usage.ru_maxrss / 2**20
    return proc.returncode, peak_mb, stdout


def make_corpus(work: Path, scale: int, cache: Path) -> Path:
    from rnnlab.data.corpus import shakespeare_path

    source = shakespeare_path(cache)
    target = work / f"corpus-{scale}x.txt"
    if not target.is_file() or target.stat().st_size != scale * source.stat().st_size:
        with open(target, "wb") as out:
            for _ in range(scale):
                with open(source, "rb") as chunk:
                    shutil.copyfileobj(chunk, out, 4 * 2**20)
    return target


def measure(args: argparse.Namespace, work: Path, scale: int, corpus: Path) -> dict[str, Any]:
    row: dict[str, Any] = {"scale": scale, "file_mb": corpus.stat().st_size / 1e6}
    cache = work / f"cache-setup-{scale}x"
    shutil.rmtree(cache, ignore_errors=True)
    code, peak, stdout = run_child(
        [sys.executable, "-c", SETUP_CHILD, str(corpus), str(cache)],
        child_env(args, cache),
        work / f"setup-{scale}x.log",
    )
    if code != 0:
        raise SystemExit(f"setup at {scale}x failed (exit {code}); see {work / f'setup-{scale}x.log'}")
    setup = json.loads(stdout.strip().splitlines()[-1])
    row.update({f"setup_{k}": v for k, v in setup.items()})
    row["setup_process_peak_mb"] = peak
    row["cache_mb"] = sum(f.stat().st_size for f in cache.rglob("*") if f.is_file()) / 1e6

    cache = work / f"cache-train-{scale}x"
    shutil.rmtree(cache, ignore_errors=True)
    run_dir = work / f"run-{scale}x"
    shutil.rmtree(run_dir, ignore_errors=True)
    train = shutil.which("rnnlab-train", path=str(Path(sys.executable).parent)) or "rnnlab-train"
    cmd = [train, "data=text_file", f"data.path={corpus}", f"trainer.max_steps={args.steps}",
           "trainer.limit_val_batches=5", "trainer.limit_test_batches=5", "trainer.enable_progress_bar=false",
           "logger=csv", f"paths.output_dir={work / 'outputs'}", f"hydra.run.dir={run_dir}"]  # fmt: skip
    code, peak, _ = run_child(cmd, child_env(args, cache), work / f"train-{scale}x.log")
    if code != 0:
        raise SystemExit(f"the run at {scale}x failed (exit {code}); see {work / f'train-{scale}x.log'}")
    summary = json.loads((run_dir / "summary.json").read_text())
    row.update(
        train_fit_peak_rss_mb=summary.get("peak_rss_mb"),
        train_fit_peak_rss_delta_mb=summary.get("peak_rss_delta_mb"),
        train_process_peak_mb=peak,
        train_wall_s=summary.get("wall_s"),
        train_steps=summary.get("global_step"),
        train_test_bpc=(summary.get("test_metrics") or {}).get("test/bpc"),
    )
    return row


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    scales = [int(s) for s in args.scales.split(",") if s.strip()]
    temp = args.work is None
    work = Path(tempfile.mkdtemp(prefix="rnnlab-corpus-memory-")) if temp else args.work.resolve()
    work.mkdir(parents=True, exist_ok=True)
    label = args.label or (str(args.source) if args.source else "this checkout")
    rows = []
    try:
        for scale in scales:
            corpus = make_corpus(work, scale, work / "shakespeare-cache")
            rows.append(measure(args, work, scale, corpus))
            r = rows[-1]
            print(
                f"[{label}] {scale:>3}x  {r['file_mb']:6.1f} MB text | setup cold {r['setup_cold_setup_s']:6.2f} s "
                f"warm {r['setup_warm_setup_s']:5.2f} s, setup process peak {r['setup_process_peak_mb']:7.1f} MB "
                f"(imports {r['setup_rss_imported_mb']:.1f} MB) | run: fit peak {r['train_fit_peak_rss_mb']:7.1f} MB, "
                f"fit-to-exit peak {r['train_process_peak_mb']:7.1f} MB, {r['train_wall_s']:.1f} s",
                flush=True,
            )
        if len(rows) > 1:
            first, last = rows[0], rows[-1]
            print(
                f"[{label}] {last['scale']}x vs {first['scale']}x: fit peak "
                f"{last['train_fit_peak_rss_mb'] - first['train_fit_peak_rss_mb']:+.1f} MB, fit-to-exit peak "
                f"{last['train_process_peak_mb'] - first['train_process_peak_mb']:+.1f} MB, setup process peak "
                f"{last['setup_process_peak_mb'] - first['setup_process_peak_mb']:+.1f} MB"
            )
        if args.json is not None:
            args.json.parent.mkdir(parents=True, exist_ok=True)
            write_text(args.json, json.dumps({"label": label, "steps": args.steps, "rows": rows}, indent=2) + "\n")
    finally:
        if temp and not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    raise SystemExit(main())
