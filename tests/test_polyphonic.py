"""task=polyphonic end to end on a small piano-roll file in the standard JSB format (data=jsb_chorales data.path=):
both backends train alike; {val,test}/nll and frame_acc are the published definitions, recomputed here from the
file and the checkpoint; a resume equals the uninterrupted run; the piano-roll picture; rnnlab-generate writes a
MIDI file of the sample from a checkpoint of either backend."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from rnnlab.train import train

pytestmark = pytest.mark.compose

GENERATE = Path(sys.executable).parent / "rnnlab-generate"
BACKENDS = ("torch", "numpy")


def make_pieces(rng: np.random.Generator, n: int) -> list[list[list[int]]]:
    """n short four-voice pieces (6 to 13 steps): each voice a random walk in its own range, rests now and then."""
    pieces = []
    for _ in range(n):
        voices = np.array([72, 65, 58, 48]) + rng.integers(-3, 4, size=4)
        steps = []
        for _ in range(int(rng.integers(6, 14))):
            voices = np.clip(voices + rng.integers(-2, 3, size=4), 36, 84)
            sounding = [int(v) for v in voices if rng.random() > 0.1]
            steps.append(sorted(set(sounding)))
        pieces.append(steps)
    return pieces


@pytest.fixture(scope="module")
def roll_file(tmp_path_factory) -> Path:
    rng = np.random.default_rng(7)
    path = tmp_path_factory.mktemp("jsb") / "tiny-chorales.json"
    path.write_text(
        json.dumps({"train": make_pieces(rng, 24), "valid": make_pieces(rng, 6), "test": make_pieces(rng, 7)})
    )
    return path


def run_settings(roll_file: Path, backend: str) -> tuple[str, ...]:
    # 3 epochs of 3 batches, an LSTM, Adam, float64
    return ("task=polyphonic", "data=jsb_chorales", f"data.path={roll_file}", "data.batch_size=8", "model=lstm",
            "model.hidden_size=12", "optimizer=adam", "optimizer.lr=0.01", "trainer.precision=64",
            "trainer.max_epochs=3", "trainer.log_every_n_steps=1", "task.sample_length=10", "seed=5",
            f"model.backend={backend}")  # fmt: skip


@pytest.fixture(scope="module")
def runs(tmp_path_factory, compose_factory, roll_file) -> dict[str, Path]:
    out = {}
    for backend in BACKENDS:
        run_dir = tmp_path_factory.mktemp(f"poly-{backend}") / "run"
        train(compose_factory(run_settings(roll_file, backend), run_dir))
        out[backend] = run_dir
    return out


def metrics(run_dir: Path) -> pd.DataFrame:
    return pd.read_csv(run_dir / "csv" / "metrics.csv")


def summary(run_dir: Path) -> dict:
    return json.loads((run_dir / "summary.json").read_text())


def best_checkpoint(run_dir: Path) -> Path:
    """The checkpoint the test split was scored with (the best val/nll)."""
    (best,) = (run_dir / "checkpoints").glob("best-*.ckpt")
    return best


def test_both_backends_train_alike(runs):
    """float64, no dropout: the same per-step losses and the same validation and test metrics."""
    a, b = metrics(runs["torch"]), metrics(runs["numpy"])
    la = a[["step", "train/loss"]].dropna().groupby("step")["train/loss"].last()
    lb = b[["step", "train/loss"]].dropna().groupby("step")["train/loss"].last()
    assert len(la) == 9
    np.testing.assert_allclose(lb.to_numpy(), la.to_numpy(), rtol=1e-10)
    assert la.iloc[-1] < la.iloc[0] - 5  # it learns (from about 61 nats: 88 keys at p = 0.5)
    sa, sb = summary(runs["torch"]), summary(runs["numpy"])
    for key in ("test/nll", "test/frame_acc", "test/loss"):
        assert sb["test_metrics"][key] == pytest.approx(sa["test_metrics"][key], rel=1e-10), key
    assert sa["test_metrics"]["test/loss"] == sa["test_metrics"]["test/nll"]


def published_metrics(pieces: list[list[list[int]]], logits_of) -> tuple[float, float]:
    """NLL in nats per predicted step (summed over the 88 keys; the first step of a piece is not predicted) and the
    frame-level accuracy TP / (TP + FP + FN), straight from the definitions, one piece at a time."""
    total, steps, tp, fp, fn = 0.0, 0, 0, 0, 0
    for piece in pieces:
        roll = np.zeros((len(piece), 88))
        for t, notes in enumerate(piece):
            roll[t, np.asarray(notes, dtype=int) - 21] = 1
        z = logits_of(roll[:-1])  # [n - 1, 88]: predictions of steps 1 .. n - 1
        p = 1 / (1 + np.exp(-z))
        y = roll[1:]
        total -= float(np.sum(y * np.log(p) + (1 - y) * np.log(1 - p)))
        steps += len(y)
        on = p > 0.5
        tp += int((on & (y == 1)).sum())
        fp += int((on & (y == 0)).sum())
        fn += int((~on & (y == 1)).sum())
    return total / steps, tp / (tp + fp + fn)


@pytest.mark.parametrize("backend", BACKENDS)
def test_test_metrics_are_the_published_definitions(runs, roll_file, backend):
    """test/nll and test/frame_acc of the summary (the best checkpoint on the test split, batched and padded)
    equal the definitions computed piece by piece from the file with the same checkpoint."""
    from rnnlab.tasks.polyphonic import PolyphonicTask

    best = best_checkpoint(runs[backend])
    model = PolyphonicTask.load_from_checkpoint(best, map_location="cpu")
    model.eval()

    def logits_of(x: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return model(torch.tensor(x[None]))[0][0].double().numpy()

    nll, frame_acc = published_metrics(json.loads(roll_file.read_text())["test"], logits_of)
    got = summary(runs[backend])["test_metrics"]
    assert got["test/nll"] == pytest.approx(nll, rel=1e-12)
    assert got["test/frame_acc"] == pytest.approx(frame_acc, rel=1e-12)
    assert 0 < frame_acc < 1


# RMSprop as the published music results used it, centered and with momentum: every state buffer it has
RMSPROP = ("optimizer=rmsprop", "optimizer.lr=0.01", "optimizer.centered=true", "optimizer.momentum=0.5")


@pytest.mark.parametrize("optimizer", ["adam", "rmsprop"])
@pytest.mark.parametrize("backend", BACKENDS)
def test_resume_equals_uninterrupted(compose, tmp_path, runs, roll_file, backend, optimizer):
    """Stop after 4 steps (mid-epoch), resume: the same later losses, test metrics and parameters, bit for bit."""
    settings = (*run_settings(roll_file, backend), *(RMSPROP if optimizer == "rmsprop" else ()))
    whole = runs[backend]
    if optimizer == "rmsprop":
        whole = tmp_path / "whole"
        train(compose(*settings, run_dir=whole))
    train(compose(*settings, "trainer.max_steps=4", run_dir=tmp_path / "first"))
    last = tmp_path / "first" / "checkpoints" / "last.ckpt"
    train(compose(*settings, f"ckpt_path={last}", run_dir=tmp_path / "resumed"))
    a = metrics(tmp_path / "resumed")[["step", "train/loss"]].dropna().groupby("step")["train/loss"].last()
    b = metrics(whole)[["step", "train/loss"]].dropna().groupby("step")["train/loss"].last()
    assert list(a.index) == [s for s in b.index if s >= 4]
    np.testing.assert_array_equal(a.to_numpy(), b[a.index].to_numpy())
    assert summary(tmp_path / "resumed")["test_metrics"] == summary(whole)["test_metrics"]
    ours = torch.load(tmp_path / "resumed" / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    theirs = torch.load(whole / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    key = "numpy_backend" if backend == "numpy" else "state_dict"
    mine = ours[key]["params"] if backend == "numpy" else ours[key]
    other = theirs[key]["params"] if backend == "numpy" else theirs[key]
    assert mine.keys() == other.keys()
    for name in mine:
        torch.testing.assert_close(mine[name], other[name], rtol=0, atol=0)


def test_piano_roll_picture(runs):
    """After every validation: a PNG under figures/ and the TensorBoard image samples/piano_roll."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    for backend, run_dir in runs.items():
        pngs = sorted((run_dir / "figures" / "samples_piano_roll").glob("step_*.png"))
        assert len(pngs) == 3, backend  # one validation per epoch
        acc = EventAccumulator(str(run_dir / "tensorboard"), size_guidance={"images": 0})  # every event file
        acc.Reload()
        assert len(acc.Images("samples/piano_roll")) == 3, backend


def test_equal_networks_sample_equal_rolls(runs):
    """The torch checkpoint's weights copied into a NumPy-backend task: the same samples for the same seed (the
    sampler is shared; the networks compute the same logits in float64)."""
    from rnnlab.tasks.polyphonic import PolyphonicTask

    best = best_checkpoint(runs["torch"])
    torch_model = PolyphonicTask.load_from_checkpoint(best, map_location="cpu")
    h = dict(torch_model.hparams)
    numpy_model = PolyphonicTask(**{**h, "backend": "numpy", "dtype": "float64"})
    for name, value in torch_model.backend.weights(torch_model.net).items():
        numpy_model.net.params[name][...] = value
    prompt = np.zeros((2, 88))
    prompt[0, [27, 43, 46, 51]] = 1  # C3 E4 G4 C5
    prompt[1, [29, 45, 48, 53]] = 1
    a = torch_model.generate_roll(prompt, 30, temperature=1.0, seed=11)
    b = numpy_model.generate_roll(prompt, 30, temperature=1.0, seed=11)
    assert a.shape == (32, 88)
    np.testing.assert_array_equal(a[:2], prompt)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, torch_model.generate_roll(prompt, 30, temperature=1.0, seed=12))


def cli(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run([str(GENERATE), *args], capture_output=True, text=True, timeout=120, env=env)


@pytest.mark.cli
@pytest.mark.parametrize("backend", BACKENDS)
def test_generate_writes_a_midi_file(runs, tmp_path, backend):
    """rnnlab-generate on a checkpoint of either backend: a standard MIDI file whose notes are the sampled roll
    (the prompt's chord first), the same file for the same seed, never written over an existing file."""
    import mido

    from rnnlab.tasks.polyphonic import PolyphonicTask

    ckpt = runs[backend] / "checkpoints" / "last.ckpt"
    out = tmp_path / "sample.mid"
    result = cli(f"ckpt_path={ckpt}", f"out={out}", "length=16", "seed=4", "prompt=48,64,67,72;50,65,69,74")
    assert result.returncode == 0, result.stderr
    assert str(out) in result.stdout
    midi = mido.MidiFile(out)
    starts: dict[int, set[int]] = {}
    clock = 0
    for message in mido.merge_tracks(midi.tracks):
        clock += message.time
        if message.type == "note_on" and message.velocity > 0:
            starts.setdefault(clock // midi.ticks_per_beat, set()).add(message.note)
    assert starts[0] == {48, 64, 67, 72}
    model = PolyphonicTask.load_from_checkpoint(ckpt, map_location="cpu")
    prompt = np.zeros((2, 88))
    prompt[0, [27, 43, 46, 51]] = 1
    prompt[1, [29, 44, 48, 53]] = 1
    roll = model.generate_roll(prompt, 16, 1.0, 4)
    sounding = {int(k) + 21 for t in range(len(roll)) for k in np.flatnonzero(roll[t])}
    assert set().union(*starts.values()) == sounding  # every sampled note is in the file, and nothing else
    again = tmp_path / "again.mid"
    assert (
        cli(f"ckpt_path={ckpt}", f"out={again}", "length=16", "seed=4", "prompt=48,64,67,72;50,65,69,74").returncode
        == 0
    )
    assert again.read_bytes() == out.read_bytes()
    before = out.read_bytes()
    refused = cli(f"ckpt_path={ckpt}", f"out={out}", "length=4")
    assert refused.returncode == 1
    assert refused.stderr.strip().count("\n") == 0
    assert "exists" in refused.stderr
    assert out.read_bytes() == before
    for args, message in (((), "out is required"), (("out=x.mid", "prompt=60,200"), "MIDI note 200 is off the piano"),
                          (("out=x.mid", "top_k=3"), "top_k applies to text only")):  # fmt: skip
        bad = cli(f"ckpt_path={ckpt}", *args)
        assert bad.returncode == 1, args
        assert message in bad.stderr, bad.stderr


def test_bidirectional_is_refused(raw_compose, roll_file):
    from rnnlab.config import validate
    from rnnlab.errors import ConfigError

    cfg = raw_compose("task=polyphonic", "data=jsb_chorales", f"data.path={roll_file}", "model.bidirectional=true")
    with pytest.raises(ConfigError, match=r"model\.bidirectional=true cannot be used with task=polyphonic"):
        validate(cfg)


@pytest.mark.unit
@pytest.mark.parametrize(
    ("preset", "cell", "params"),
    [("jsb_lstm", "lstm", 301_144), ("jsb_gru", "gru", 299_816), ("jsb_rnn", "rnn", 299_083),
     ("jsb_chung_lstm", "lstm", 21_508), ("jsb_chung_gru", "gru", 22_904), ("jsb_chung_rnn", "rnn", 27_888)],
)  # fmt: skip
def test_presets_are_the_published_networks(raw_compose, roll_file, preset, cell, params):
    """The presets of the published tables compose, validate and build the networks their comments state: about
    300K parameters (Bai et al. 2018: jsb_lstm, jsb_gru, jsb_rnn) and about 20K (Chung et al. 2014: jsb_chung_*)."""
    from rnnlab.config import validate
    from rnnlab.models.init import init_parameters
    from rnnlab.models.spec import NetSpec

    cfg = raw_compose(f"experiment={preset}", f"data.path={roll_file}")
    validate(cfg)
    assert (cfg.task.name, cfg.data.name, cfg.model.cell, cfg.model.bidirectional) == (
        "polyphonic", "jsb_chorales", cell, False
    )  # fmt: skip
    spec = NetSpec.from_model_config(cfg.model, 0, 88, input_features=88)
    assert sum(a.size for a in init_parameters(spec, 0).values()) == params


@pytest.mark.cli
def test_jsb_chorales_script_in_miniature(tmp_path, roll_file):
    """scripts/jsb_chorales.py --smoke: one preset, one seed, both backends through the real sweep, then the report
    with a row per run and the comparison of the backends."""
    script = Path(__file__).resolve().parents[1] / "scripts" / "jsb_chorales.py"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, str(script), "--smoke", "--data-path", str(roll_file), "--seeds", "4",
                           "--cells", "lstm", "--work", str(tmp_path / "work")], capture_output=True, text=True,
                          timeout=600, env=env)  # fmt: skip
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    text = (tmp_path / "work" / "report" / "README.md").read_text()
    assert "**A smoke run**" in text
    rows = [[c.strip() for c in line.split("|")[1:-1]] for line in text.splitlines() if line.startswith("| jsb_lstm")]
    runs = {r[1]: r for r in rows if r[2] == "4"}  # a row per run: preset, backend, seed, params, val, test, ...
    means = {r[1]: r for r in rows if r[2] == "1"}  # over the seeds: preset, backend, seeds (1), mean, ...
    assert sorted(runs) == sorted(means) == ["numpy", "torch"]
    for backend in runs:
        assert runs[backend][5] == means[backend][3]  # one seed: its test/nll is the mean
        assert runs[backend][-1] == "completed"
    assert "jsb_lstm, NumPy mean" in text
