"""scripts/published.py (the published tables and the LSTM variant study) in miniature: every stage through the
real command line on a tiny standard split and a few music21 chorales, the report's numbers against the runs'
own summaries, and the stages' resumability (a finished run is skipped, an interrupted one resumes)."""

from __future__ import annotations

import json
import os
import re
import shutil
import statistics
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

pytestmark = pytest.mark.cli

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "published.py"
TINY = ("--extra", "model.hidden_size=6", "--extra", "trainer.limit_train_batches=2")  # on top of --quick's


def pieces(rng: np.random.Generator, n: int) -> list[list[list[int]]]:
    return [[sorted({int(v) for v in rng.integers(40, 80, size=3)}) for _ in range(int(rng.integers(5, 10)))]
            for _ in range(n)]  # fmt: skip


@pytest.fixture(scope="module")
def study(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, subprocess.CompletedProcess]:
    root = tmp_path_factory.mktemp("published")
    rng = np.random.default_rng(3)
    data = root / "tiny.json"
    data.write_text(json.dumps({"train": pieces(rng, 16), "valid": pieces(rng, 5), "test": pieces(rng, 5)}))
    work = root / "work"
    done = run("--data-path", str(data), "--work", str(work))
    return work, data, done


def run(*args: str, stages: str | None = None) -> subprocess.CompletedProcess:
    cmd = [sys.executable, str(SCRIPT), "--quick", "--cells", "lstm", "--variants", "peephole,cifg",
           "--max-chorales", "12", "--jobs", "2", *TINY, *args]  # fmt: skip
    if stages:
        cmd += ["--stages", stages]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=900, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return done


def summary(run_dir: Path) -> dict:
    return json.loads((run_dir / "summary.json").read_text())


def row(text: str, first: str) -> list[str]:
    hits = [line for line in text.splitlines() if line.startswith("| ") and first in line.split("|")[3]]
    assert hits, f"no table row for {first}"
    return [c.strip() for c in hits[0].split("|")[1:-1]]


def test_every_stage_ran_and_the_report_holds_the_runs_numbers(study: tuple[Path, Path, subprocess.CompletedProcess]):
    work, _, done = study
    for stage in ("search", "tables", "ordering (seeds)", "noise", "embedded", "variants"):
        assert f"stage {stage}:" in done.stdout
    text = (work / "report" / "README.md").read_text()
    assert "**A --quick miniature**" in text
    # the search: two candidates, one chosen (bold), the chosen one the lowest best val/nll of the two
    search = {float(p.name[2:]): summary(p)["optimized_value"] for p in (work / "search" / "chung_lstm").iterdir()
              if p.is_dir()}  # fmt: skip
    assert len(search) == 2
    chosen = min(search, key=search.get)
    assert f"**{chosen:g}: {search[chosen]:.3f}**" in text
    # the main table: mean ± sd over the two seeds of each backend, from the runs' own summaries
    for preset, setting in (("jsb_chung_lstm", "chung_lstm"), ("jsb_lstm", "bai_lstm")):
        cells = row(text, f"`{preset}`")
        for backend, column in (("torch", 5), ("numpy", 6)):
            dirs = [work / "standard" / setting / backend / f"seed{s}" for s in (1, 2)]
            if setting == "chung_lstm" and backend == "numpy":  # its seed-1 run is the chosen search run
                dirs[0] = work / "search" / "chung_lstm" / f"lr{chosen:g}"
            tests = [summary(d)["test_metrics"]["test/nll"] for d in dirs]
            mean, sd = re.match(r"([\d.]+) ± ([\d.]+)", cells[column]).groups()
            assert float(mean) == pytest.approx(statistics.fmean(tests), abs=6e-4)
            assert float(sd) == pytest.approx(statistics.stdev(tests), abs=6e-4)
    assert "### NumPy against PyTorch, paired by seed" in text
    # the ordering stage: the Bai LSTM's two drawn rates and the preset's own (its run is the tables' NumPy seed 1),
    # the lowest best val/nll chosen, and the chosen rate's runs over both seeds in its table
    assert "stage ordering (candidates):" in done.stdout
    assert "stage ordering (seeds):" in done.stdout
    drawn = {float(p.name[2:]): p / "seed1" for p in (work / "ordering" / "bai_lstm").iterdir() if p.is_dir()}
    assert len(drawn) == 2
    assert 0.003 not in drawn
    vals = {lr: summary(d)["optimized_value"] for lr, d in drawn.items()}
    vals[0.003] = summary(work / "standard" / "bai_lstm" / "numpy" / "seed1")["optimized_value"]
    own = min(vals, key=vals.get)
    section = text.split("### Each cell at its own learning rate (stage `ordering`)")[1].split("\n### ")[0]
    assert f"**{own:g}{' (the preset' + chr(39) + 's)' if own == 0.003 else ''}: {vals[own]:.3f}**" in section
    if own == 0.003:
        seeds = [work / "standard" / "bai_lstm" / "numpy" / f"seed{s}" for s in (1, 2)]
    else:
        seeds = [drawn[own], drawn[own].with_name("seed2")]
    line = next(x for x in section.splitlines() if x.startswith("| `jsb_lstm` |"))
    cells = [c.strip() for c in line.split("|")[1:-1]]  # preset, preset lr, at preset lr, own lr, at own lr, paper
    assert float(cells[3]) == own
    mean = float(re.match(r"([\d.]+) ± ", cells[4]).group(1))
    assert mean == pytest.approx(statistics.fmean(summary(d)["test_metrics"]["test/nll"] for d in seeds), abs=6e-4)
    assert "## The same configurations on the embedded split (music21)" in text
    # the noise stage: the Chung preset with model.weight_noise, its runs' own means in its table
    noisy = [summary(work / "noise" / "chung_lstm" / "torch" / "seed1")]  # --quick: one seed
    assert {n["hparams"]["model/weight_noise"] for n in noisy} == {0.075}
    section = text.split("## Chung et al.'s weight noise")[1]
    line = next(x for x in section.splitlines() if x.startswith("| `jsb_chung_lstm` |"))
    cells = [c.strip() for c in line.split("|")[1:-1]]  # preset, published, no noise, torch noise, NumPy noise
    mean = float(re.match(r"([\d.]+) \(1 seed\)", cells[3]).group(1))
    assert mean == pytest.approx(statistics.fmean(n["test_metrics"]["test/nll"] for n in noisy), abs=6e-4)
    assert len(list((work / "embedded").rglob("summary.json"))) == 4  # 2 presets x 2 backends x 1 seed (--quick)
    # the variant study: both variants, the same two trials (learning rate, hidden size) each
    assert "| `peephole` (V) | 2 |" in text
    assert "| `cifg` (CIFG) | 2 |" in text
    lrs = {v: sorted(summary(d)["hparams"]["optimizer/lr"] for d in (work / "variants" / v).iterdir() if d.is_dir())
           for v in ("peephole", "cifg")}  # fmt: skip
    assert lrs["peephole"] == lrs["cifg"]
    for figure in ("tables_standard.png", "variants.png"):
        assert (work / "report" / "figures" / figure).read_bytes().startswith(b"\x89PNG")


def test_stages_skip_finished_runs_and_resume_interrupted_ones(study: tuple[Path, Path, subprocess.CompletedProcess]):
    work, data, _ = study
    again = run("--data-path", str(data), "--work", str(work), stages="search,tables,variants")
    assert re.search(r"stage tables: \d+ runs, (\d+) finished before, 0 to run", again.stdout)
    # a run that was stopped: no summary.json yet, its last checkpoint on disk
    victim = work / "standard" / "bai_lstm" / "torch" / "seed2"
    before = summary(victim)
    (victim / "summary.json").unlink()
    resumed = run("--data-path", str(data), "--work", str(work), stages="tables")
    assert "1 to run" in resumed.stdout
    assert "resumed from" in resumed.stdout
    kept = victim.with_name("seed2.partial-1")
    assert (kept / "checkpoints" / "last.ckpt").is_file()  # the interrupted attempt is kept, not overwritten
    after = summary(victim)
    assert after["status"] == "completed"
    assert after["test_metrics"]["test/nll"] == before["test_metrics"]["test/nll"]
    shutil.rmtree(kept)


def test_the_standard_split_is_asked_for_in_one_line(tmp_path: Path):
    done = subprocess.run([sys.executable, str(SCRIPT), "--stages", "search", "--data-path", str(tmp_path / "no.json"),
                           "--work", str(tmp_path / "w")], capture_output=True, text=True, timeout=120)  # fmt: skip
    assert done.returncode == 2
    assert done.stderr.strip().count("\n") == 0
    assert "no.json" in done.stderr
    assert not (tmp_path / "w").exists()


@pytest.mark.unit
def test_a_run_still_going_is_left_alone(tmp_path: Path):
    """A directory whose owner process is alive on this host is neither renamed nor resumed; one whose process is
    gone is resumed."""
    import socket

    sys.path.insert(0, str(SCRIPT.parent))
    try:
        import published
    finally:
        sys.path.remove(str(SCRIPT.parent))
    run_dir = tmp_path / "standard" / "chung_lstm" / "torch" / "seed1"
    run_dir.mkdir(parents=True)
    owner = {"kind": "run", "pid": os.getpid(), "host": socket.gethostname(), "status": "running"}
    (run_dir / ".rnnlab-owner.json").write_text(json.dumps(owner))
    runner = published.Runner(tmp_path, 1)
    assert "still running" in runner.running_elsewhere(run_dir)
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    (run_dir / ".rnnlab-owner.json").write_text(json.dumps({**owner, "pid": int(gone.stdout)}))
    assert runner.running_elsewhere(run_dir) is None
    (run_dir / ".rnnlab-owner.json").write_text(json.dumps({**owner, "status": "interrupted"}))
    assert runner.running_elsewhere(run_dir) is None


def test_ctrl_c_stops_every_run_and_the_next_call_resumes(tmp_path: Path):
    """SIGINT to the script (Ctrl-C): no new run starts, the runs going are stopped with their checkpoint kept and
    the script exits 130 with one line; the same command again resumes the stopped runs and finishes."""
    import signal
    import time

    rng = np.random.default_rng(4)
    data = tmp_path / "tiny.json"
    data.write_text(json.dumps({"train": pieces(rng, 16), "valid": pieces(rng, 5), "test": pieces(rng, 5)}))
    work = tmp_path / "work"
    cmd = [sys.executable, str(SCRIPT), "--quick", "--cells", "lstm", "--stages", "search", "--jobs", "1", *TINY,
           "--extra", "trainer.max_epochs=400", "--data-path", str(data), "--work", str(work)]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    script = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    deadline = time.monotonic() + 300
    while not list(work.glob("search/*/*/checkpoints/last.ckpt")):
        assert script.poll() is None, "the script ended before its first checkpoint"
        assert time.monotonic() < deadline, "no checkpoint before the deadline"
        time.sleep(0.2)
    script.send_signal(signal.SIGINT)
    out, err = script.communicate(timeout=120)
    assert script.returncode == 130, out + err
    assert err.strip().splitlines()[-1].startswith("published.py: interrupted")
    runs = [p for p in (work / "search" / "chung_lstm").iterdir() if p.is_dir()]
    assert len(runs) == 1  # the second candidate never started
    assert summary(runs[0])["status"] == "interrupted"
    assert (runs[0] / "checkpoints" / "last.ckpt").is_file()
    shorter = [*cmd, "--extra", "trainer.max_epochs=3"]  # a resumed run may change its epoch budget
    again = subprocess.run(shorter, capture_output=True, text=True, timeout=900, env=env)
    assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
    assert "resumed from" in again.stdout
    done = [p for p in (work / "search" / "chung_lstm").iterdir() if p.is_dir() and ".partial-" not in p.name]
    assert len(done) == 2
    assert all(summary(p)["status"] == "completed" for p in done)
