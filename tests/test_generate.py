"""rnnlab-generate: sampling from checkpoints of both backends through the real command, and its one-line errors."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from rnnlab.generate import UsageError, parse
from rnnlab.train import train

pytestmark = pytest.mark.cli
GENERATE = Path(sys.executable).parent / "rnnlab-generate"
TINY_LM = ("task=language_model", "data=shakespeare", "data.seq_len=16", "data.batch_size=8", "model.hidden_size=12",
           "model.embed_dim=6", "trainer.max_steps=3", "trainer.max_epochs=null", "trainer.limit_val_batches=1",
           "trainer.limit_test_batches=1", "task.sample_length=8", "logger=csv")  # fmt: skip


def run(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    env.pop("HYDRA_FULL_ERROR", None)
    return subprocess.run([str(GENERATE), *args], capture_output=True, text=True, timeout=120, env=env)


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory) -> dict[str, Path]:
    from hydra import compose, initialize_config_dir
    from omegaconf import open_dict

    from rnnlab.cli import config_dir

    root = tmp_path_factory.mktemp("generate")
    out = {}
    for backend in ("torch", "numpy"):
        with initialize_config_dir(config_dir=config_dir(), version_base="1.3"):
            cfg = compose("train", overrides=[*TINY_LM, f"model.backend={backend}"])
        with open_dict(cfg):
            cfg.paths.run_dir = str(root / backend)
            cfg.paths.output_dir = str(root)
            cfg.trainer.enable_progress_bar = False
            cfg.callbacks.progress_bar = None
        train(cfg)
        out[backend] = root / backend / "checkpoints" / "last.ckpt"
    return out


@pytest.mark.parametrize("backend", ["torch", "numpy"])
def test_samples_from_either_backend(checkpoints, backend):
    args = (f"ckpt_path={checkpoints[backend]}", "prompt=ROMEO:", "length=40", "temperature=0.9", "seed=4")
    first, again = run(*args), run(*args)
    assert first.returncode == 0, first.stderr
    assert first.stderr == ""
    text = first.stdout.removesuffix("\n")
    assert text.startswith("ROMEO:")
    assert len(text) == len("ROMEO:") + 40
    assert again.stdout == first.stdout  # the seed fixes the sample
    other = run(*args[:-1], "seed=5")
    assert other.stdout != first.stdout


def test_top_k_one_is_greedy(checkpoints):
    a = run(f"ckpt_path={checkpoints['numpy']}", "length=30", "top_k=1", "seed=1")
    b = run(f"ckpt_path={checkpoints['numpy']}", "length=30", "top_k=1", "seed=2")
    assert a.returncode == 0, a.stderr
    assert a.stdout == b.stdout  # only the most likely character is ever drawn


def test_errors_are_one_line(checkpoints, tmp_path):
    junk = tmp_path / "junk.ckpt"
    junk.write_bytes(b"not a checkpoint")
    cases = {
        (f"ckpt_path={tmp_path / 'missing.ckpt'}",): "ckpt_path: file not found",
        (f"ckpt_path={junk}",): "ckpt_path: not a checkpoint",
        (f"ckpt_path={checkpoints['numpy']}", "prompt=\u20ac"): "prompt: character",
        (f"ckpt_path={checkpoints['torch']}", "temperature=0"): "temperature must be a finite number > 0",
        (f"ckpt_path={checkpoints['torch']}", "lenght=3"): "unknown argument 'lenght'",
    }
    for args, expected in cases.items():
        result = run(*args)
        assert result.returncode == 1, args
        lines = [line for line in result.stderr.splitlines() if line.strip()]
        assert len(lines) == 1, result.stderr
        assert lines[0].startswith("rnnlab-generate: error: ")
        assert expected in lines[0]
        assert result.stdout == ""


def test_help_does_not_import_torch():
    probe = ("import sys, runpy; sys.argv = ['rnnlab-generate', '--help']; from rnnlab.generate import main; main(); "
             "print('@@', sorted(m for m in ('torch', 'lightning') if m in sys.modules))")  # fmt: skip
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert "ckpt_path" in result.stdout
    assert result.stdout.strip().endswith("@@ []")


@pytest.mark.unit
def test_parse_types_and_checks():
    values = parse(["ckpt_path=a.ckpt", 'prompt="ROMEO:"', "length=5", "top_k=null", "temperature=1.5"])
    assert values == {"ckpt_path": "a.ckpt", "prompt": "ROMEO:", "length": 5, "temperature": 1.5, "top_k": None,
                      "seed": 0, "device": "cpu", "out": None, "tempo": 100.0}  # fmt: skip
    music = parse(["ckpt_path=a.ckpt", "out=x.mid", "tempo=72", "temperature=null"])
    assert (music["out"], music["tempo"], music["temperature"]) == ("x.mid", 72.0, None)  # None: the task's default
    bads = (["length=3"], ["ckpt_path=a", "length=x"], ["ckpt_path=a", "top_k=0"], ["ckpt_path=a", "oops"],
            ["ckpt_path=a", "tempo=0"], ["ckpt_path=a", "tempo=inf"], ["ckpt_path=a", "temperature=0"])  # fmt: skip
    for bad in bads:
        with pytest.raises(UsageError):
            parse(bad)
