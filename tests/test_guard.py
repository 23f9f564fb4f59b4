"""The guard: every cell x backend x task x dtype, pinned bit for bit through the path a user's run takes.

Each combination composes the real config (conftest's ``compose``), runs ``rnnlab.train.train(cfg)`` for 20
steps with one thread and the CSV logger, and compares three things with tests/data/guard_reference.json: the
sha256 of the weights the first training step starts from (every parameter's name, dtype, shape and bytes, in
sorted-name order), the 20 per-step ``train/loss`` values read back from the run's metrics.csv, and the sha256 of
the weights after the last step (a one-ulp change in an update need not show in 20 losses; it shows there). A
refactoring (modules moved, train() split up, the cell or task code reorganised) must leave every number
unchanged, so any difference fails, naming the combination, the first differing step and both values. The tiny
networks still take every code path that matters: 2-layer stacks with dropout (lstm), 2-layer bidirectional
stacks (gru, except for task=language_model, which refuses a backward direction), one-hot inputs (the rnn
language model), a relu cell (the rnn regressor), the three seq2seq attentions with scheduled teacher forcing,
and Adam, SGD with Nesterov momentum and Adagrad. A combination the config validation refuses is skipped with
that error's message.

When a commit changes the numbers on purpose, re-pin them in the same commit and say why in its message:
``RNNLAB_GUARD_REGEN=1 python -m pytest tests/test_guard.py`` (``-k classify-gru`` for some combinations only)
rewrites their entries, passes, and warns for each entry whose values changed; review the diff of the JSON file.
The exact bits depend on the machine (torch version and CPU capability, NumPy version, SIMD targets and BLAS),
which the file records per entry: on a machine that differs in any of these, the losses are compared with a
relative tolerance (1e-12 for float64, 1e-5 for float32) instead, and the final weights not at all, with a
warning; the initial-weights hash is always compared exactly.
"""

from __future__ import annotations

import contextlib
import csv
import fcntl
import hashlib
import json
import math
import os
import re
import tempfile
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from rnnlab.config import validate
from rnnlab.errors import ConfigError

pytestmark = pytest.mark.compose

REFERENCE = Path(__file__).parent / "data" / "guard_reference.json"
REGEN = os.environ.get("RNNLAB_GUARD_REGEN", "") not in ("", "0")
REPIN = "RNNLAB_GUARD_REGEN=1 python -m pytest tests/test_guard.py -k '{key}'"
STEPS = 20
TOLERANCE = {"float64": 1e-12, "float32": 1e-5}  # relative, on another machine only
PRECISION = {"float32": "32-true", "float64": "64"}  # trainer.precision as conf/trainer/default.yaml spells it

# One small dataset per task that needs no file from the user (the choices of the task's own tests).
TASKS: dict[str, tuple[str, ...]] = {
    "classify": ("task=classify", "data=synthetic_text", "data.num_samples=400", "data.min_len=4", "data.max_len=12",
                 "data.batch_size=16"),
    "language_model": ("task=language_model", "data=shakespeare", "data.seq_len=12", "data.batch_size=8"),
    "forecast": ("task=forecast", "data=airline", "optimizer=sgd", "optimizer.lr=0.05", "optimizer.momentum=0.9",
                 "optimizer.nesterov=true"),
    "tag": ("task=tag", "data=ner_synth", "data.num_train=120", "data.num_val=24", "data.num_test=24",
            "data.batch_size=12"),
    "regress": ("task=regress", "data=adding", "data.length=10", "data.num_train=96", "data.num_val=32",
                "data.num_test=32", "data.batch_size=16", "optimizer=adagrad"),
    "seq2seq": ("task=seq2seq", "data=dates", "data.num_samples=200", "data.batch_size=8", "task.teacher_forcing=0.5"),
    "anomaly": ("task=anomaly", "data=mitdb", "data.window=16", "data.batch_size=8", "optimizer=sgd",
                "optimizer.lr=0.05"),
    "polyphonic": ("task=polyphonic", "data=jsb_chorales", "data.max_chorales=10", "data.batch_size=2",
                   "optimizer=rmsprop", "optimizer.lr=0.003", "optimizer.centered=true", "task.sample_length=0"),
}  # fmt: skip
# Per cell: 1 layer; 2 layers with dropout; 2 layers bidirectional (where the task allows a backward direction).
CELLS: dict[str, tuple[str, ...]] = {
    "rnn": ("model=rnn", "model.num_layers=1", "model.bidirectional=false"),
    "lstm": ("model=lstm", "model.num_layers=2", "model.dropout=0.25", "model.bidirectional=false"),
    "gru": ("model=gru", "model.num_layers=2", "model.bidirectional=true"),
}
# A few more code paths, each on one cell and task.
EXTRA: dict[tuple[str, str], tuple[str, ...]] = {
    ("language_model", "rnn"): ("model.embed_dim=0",),  # one-hot characters
    ("language_model", "gru"): ("model.bidirectional=false",),  # validate() refuses a backward direction here
    ("polyphonic", "gru"): ("model.bidirectional=false",),  # ... and here
    ("anomaly", "gru"): ("model.bidirectional=false",),  # ... and here
    ("regress", "rnn"): ("model.nonlinearity=relu",),
    ("seq2seq", "rnn"): ("model.attention=none",),
    ("seq2seq", "lstm"): ("model.attention=additive",),
    ("seq2seq", "gru"): ("model.attention=dot",),
}
COMMON = ("model.hidden_size=8", "model.embed_dim=6", "logger=csv", "threads=1", f"trainer.max_steps={STEPS}",
          "trainer.max_epochs=null", "trainer.log_every_n_steps=1", "trainer.limit_val_batches=0",
          "trainer.num_sanity_val_steps=0", "callbacks.model_checkpoint=null", "run_test=false",
          "print_sample=false")  # fmt: skip
BACKENDS = ("numpy", "torch")
DTYPES = ("float32", "float64")
MATRIX = [(t, c, b, d) for t in TASKS for c in CELLS for b in BACKENDS for d in DTYPES]


class GuardToleranceWarning(UserWarning):
    """The losses were compared with a tolerance: this machine differs from the one they were pinned on."""


class GuardRepinnedWarning(UserWarning):
    """RNNLAB_GUARD_REGEN=1 changed a pinned entry."""


def combination_key(task: str, cell: str, backend: str, dtype: str) -> str:
    return f"{task}-{cell}-{backend}-{dtype}"


def overrides_of(task: str, cell: str, backend: str, dtype: str) -> list[str]:
    """The command-line overrides of one combination: COMMON, then its own. Hydra refuses the same key twice, so a
    later choice replaces an earlier one here (EXTRA's over CELLS' and COMMON's)."""
    chosen = [*COMMON, *TASKS[task], *CELLS[cell], f"model.backend={backend}",
              f"trainer.precision={PRECISION[dtype]}", *EXTRA.get((task, cell), ())]  # fmt: skip
    merged: dict[str, str] = {}
    for override in chosen:
        merged.pop(override.split("=", 1)[0], None)
        merged[override.split("=", 1)[0]] = override
    return list(merged.values())


def own_overrides(overrides: list[str]) -> str:
    """What the reference stores per entry: the overrides that are not COMMON (stored once for all), as a command
    line."""
    return " ".join(o for o in overrides if o not in COMMON)


# ------------------------------------------------------------------------------------- the hook into train()
def watch_weights() -> tuple[Any, dict[str, dict[str, np.ndarray]]]:
    """THE one hook into rnnlab.train: a Lightning callback for ``train(cfg, callbacks=[...])`` and ``{"start": {},
    "end": {}}``; once the run is over, each holds a copy of every parameter (``{name: array}``): as the first
    training step found it (``on_train_start``: after build_task() and Lightning's own dtype conversion) and as
    the fit left it (``on_train_end``). NumPy backend: the network's arrays (``net.params``); torch backend: the
    task module's ``named_parameters()``."""
    from lightning.pytorch.callbacks import Callback

    weights: dict[str, dict[str, np.ndarray]] = {"start": {}, "end": {}}

    def copy_into(when: str, model: Any) -> None:
        if model.hparams.backend == "numpy":
            named = list(model.net.params.items())
        else:
            named = [(name, p.detach().cpu().numpy()) for name, p in model.named_parameters()]
        weights[when].update({name: np.array(array, copy=True) for name, array in named})

    class WatchWeights(Callback):
        def on_train_start(self, trainer: Any, pl_module: Any) -> None:
            copy_into("start", pl_module)

        def on_train_end(self, trainer: Any, pl_module: Any) -> None:
            copy_into("end", pl_module)

    return WatchWeights(), weights


def weights_sha256(weights: dict[str, np.ndarray]) -> str:
    digest = hashlib.sha256()
    for name in sorted(weights):
        array = np.ascontiguousarray(weights[name])
        digest.update(f"{name}\0{array.dtype.str}\0{array.shape}\0".encode())
        digest.update(array.tobytes())
    return digest.hexdigest()


def train_losses(run_dir: Path) -> list[float]:
    """The per-step ``train/loss`` of the run's metrics.csv, read as written (the csv module, not pandas, whose
    float parser may round the last bit); asserts one row per step 0, 1, 2, ..."""
    with open(run_dir / "csv" / "metrics.csv", newline="") as fh:
        rows = [row for row in csv.DictReader(fh) if row.get("train/loss")]
    assert [int(row["step"]) for row in rows] == list(range(len(rows))), "train/loss is not logged once per step"
    return [float(row["train/loss"]) for row in rows]


# ------------------------------------------------------------------------------------------- machine facts
def machine_facts() -> dict[str, Any]:
    """What the exact bits depend on besides the code: torch's version and the CPU kernels it dispatches to,
    NumPy's version and SIMD targets, and NumPy's BLAS (threadpoolctl)."""
    import torch
    from threadpoolctl import threadpool_info

    pools = [p for p in threadpool_info() if p.get("user_api") == "blas"]
    numpy_pools = [p for p in pools if any(part.startswith("numpy") for part in Path(p["filepath"]).parts)]
    blas = sorted(f"{p.get('internal_api')} {p.get('version')} {p.get('architecture')}" for p in numpy_pools or pools)
    try:  # the SIMD kernels NumPy's ufuncs (exp, tanh, sums) pick on this CPU
        from numpy._core._multiarray_umath import __cpu_dispatch__, __cpu_features__

        simd = [name for name in __cpu_dispatch__ if __cpu_features__.get(name)]
    except ImportError:  # pragma: no cover (NumPy < 2 or a future layout)
        simd = None
    return {
        "torch": torch.__version__,
        "torch_cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "numpy": np.__version__,
        "numpy_simd": simd,
        "blas": blas,
    }


def machine_id(facts: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(facts, sort_keys=True).encode()).hexdigest()[:12]


# ---------------------------------------------------------------------------------------- the reference file
ABOUT = ("Pinned by tests/test_guard.py; do not edit by hand. Each entry ran rnnlab-train with common_overrides and "
         "its own overrides (its own win for a key in both). Re-pin on purpose with "
         "RNNLAB_GUARD_REGEN=1 python -m pytest tests/test_guard.py and say why in the commit.")  # fmt: skip
COMMON_LINE = " ".join(COMMON)


def load_reference() -> dict[str, Any]:
    if not REFERENCE.is_file():
        return {"about": ABOUT, "common_overrides": COMMON_LINE, "machines": {}, "entries": {}}
    return json.loads(REFERENCE.read_text())


def render(reference: dict[str, Any]) -> str:
    """JSON, one key per line, with lists of numbers on one line (a re-pinned loss is a one-line diff)."""
    used = {entry.get("machine") for entry in reference["entries"].values()}
    content = {
        "about": ABOUT,
        "common_overrides": COMMON_LINE,
        "machines": {k: v for k, v in sorted(reference["machines"].items()) if k in used},
        "entries": dict(sorted(reference["entries"].items())),
    }
    text = json.dumps(content, indent=1, sort_keys=False)
    return re.sub(r"\[\s+([^\[\]{}\"]*?)\s+\]", lambda m: "[" + ", ".join(re.split(r",\s+", m.group(1))) + "]", text)


@contextlib.contextmanager
def reference_for_update() -> Iterator[dict[str, Any]]:
    """The reference, to change in place and written back atomically; one writer at a time (pytest-xdist)."""
    lock_path = Path(tempfile.gettempdir()) / f"rnnlab-guard-{hashlib.sha1(str(REFERENCE).encode()).hexdigest()}.lock"
    with open(lock_path, "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        reference = load_reference()
        yield reference
        REFERENCE.parent.mkdir(parents=True, exist_ok=True)
        tmp = REFERENCE.with_name(f".{REFERENCE.name}.{os.getpid()}.tmp")
        tmp.write_text(render(reference) + "\n")
        os.replace(tmp, REFERENCE)


def same_bits(a: float, b: float) -> bool:
    return a.hex() == b.hex()  # nan equals nan, 0.0 differs from -0.0


def close(a: float, b: float, rel: float) -> bool:
    return same_bits(a, b) or (math.isfinite(a) and math.isfinite(b) and abs(a - b) <= rel * max(abs(a), abs(b)))


def loss_differences(pinned: list[float], now: list[float], rel: float | None) -> str | None:
    """None if ``now`` matches ``pinned`` (bit for bit when ``rel`` is None); else what differs, first step first."""
    same = same_bits if rel is None else (lambda a, b: close(a, b, rel))
    steps = [i for i, (a, b) in enumerate(zip(pinned, now, strict=False)) if not same(a, b)]
    if len(pinned) != len(now):
        steps.append(min(len(pinned), len(now)))
    if not steps:
        return None
    first = steps[0]
    if first >= min(len(pinned), len(now)):
        return f"{len(now)} losses now, {len(pinned)} pinned"
    a, b = pinned[first], now[first]
    how = "bit for bit" if rel is None else f"within relative {rel:g}"
    return (f"train/loss differs ({how}) first at step {first}: pinned {a!r} ({a.hex()}), now {b!r} ({b.hex()}); "
            f"{len(steps)} of {len(now)} steps differ")  # fmt: skip


# --------------------------------------------------------------------------------------------------- tests
@pytest.mark.parametrize(("task", "cell", "backend", "dtype"), MATRIX, ids=[combination_key(*c) for c in MATRIX])
def test_guard(compose, task, cell, backend, dtype):
    from rnnlab.train import train

    key = combination_key(task, cell, backend, dtype)
    overrides = overrides_of(task, cell, backend, dtype)
    reference = load_reference()
    pinned = reference["entries"].get(key)
    repin = f"If the change is intended, re-pin on purpose and say why in the commit: {REPIN.format(key=key)}"

    cfg = compose(*overrides)
    try:
        validate(cfg)
        refused = None
    except ConfigError as err:  # a combination the project refuses: skipped, and the reference says so
        refused = str(err)
    if refused is not None:
        reason = f"the config is refused: {refused}"
        if REGEN:
            with reference_for_update() as reference:
                reference["entries"][key] = {"overrides": own_overrides(overrides), "skipped": reason}
        elif pinned is not None and "skipped" not in pinned:
            pytest.fail(f"{key}: pinned values exist, but the config is now refused ({refused}). {repin}")
        pytest.skip(f"{key}: {reason}")

    watcher, watched = watch_weights()
    train(cfg, callbacks=[watcher])
    run_dir = Path(cfg.paths.run_dir)
    losses = train_losses(run_dir)
    assert len(losses) == STEPS, f"{key}: {len(losses)} training steps logged, expected {STEPS}"
    weights = watched["start"]
    assert weights, f"{key}: the hook saw no parameters at the start of training"
    assert watched["end"].keys() == weights.keys(), f"{key}: the hook saw other parameters at the end of training"
    assert all(a.dtype == np.dtype(dtype) for a in weights.values()), f"{key}: a parameter is not {dtype}"
    assert all(math.isfinite(v) for v in losses), f"{key}: a non-finite loss: {losses}"
    # metrics.csv holds each loss as the run computed it: float32 values exactly (not rounded to fewer digits),
    # and a float64 run's losses in float64 (not rounded to float32 on the way)
    as_float32 = [float(np.float32(v)) == v for v in losses]
    assert all(as_float32) if dtype == "float32" else not all(as_float32), f"{key}: {losses}"

    entry = {
        "overrides": own_overrides(overrides),
        "machine": machine_id(facts := machine_facts()),
        "init_sha256": weights_sha256(weights),
        "init_numbers": int(sum(a.size for a in weights.values())),
        "losses": losses,
        "final_sha256": weights_sha256(watched["end"]),
    }
    if REGEN:
        with reference_for_update() as reference:
            reference["machines"][entry["machine"]] = facts
            reference["entries"][key] = entry
        if entry != pinned:
            warnings.warn(f"re-pinned {key} in {REFERENCE.name}" + (" (new)" if pinned is None else ""),
                          GuardRepinnedWarning, stacklevel=1)  # fmt: skip
        return

    if pinned is None:
        pytest.fail(f"{key}: nothing pinned in {REFERENCE}. Pin it on purpose: {REPIN.format(key=key)}")
    if "skipped" in pinned:
        pytest.fail(f"{key}: pinned as refused ({pinned['skipped']}), but it now runs. {repin}")
    problems = []
    if reference["common_overrides"] != COMMON_LINE:
        problems.append(f"COMMON changed (pinned {reference['common_overrides']!r}, now {COMMON_LINE!r})")
    if pinned["overrides"] != entry["overrides"]:
        problems.append(f"its overrides changed (pinned {pinned['overrides']!r}, now {entry['overrides']!r})")
    if pinned["init_sha256"] != entry["init_sha256"]:
        problems.append(f"the initial weights differ: sha256 pinned {pinned['init_sha256'][:16]}..., now "
                        f"{entry['init_sha256'][:16]}... ({pinned['init_numbers']} numbers pinned, "
                        f"{entry['init_numbers']} now)")  # fmt: skip
    rel = None
    pinned_facts = reference["machines"].get(pinned["machine"], {})
    if pinned_facts != facts:
        rel = TOLERANCE[dtype]
        differ = ", ".join(
            f"{k}: {pinned_facts.get(k)} -> {facts[k]}" for k in facts if pinned_facts.get(k) != facts[k]
        )
        warnings.warn(f"{key}: pinned on another machine ({differ or 'unknown facts'}); the losses are compared "
                      f"within relative {rel:g}, not bit for bit, and the final weights are not compared",
                      GuardToleranceWarning, stacklevel=1)  # fmt: skip
    difference = loss_differences(pinned["losses"], losses, rel)
    if difference is not None:
        problems.append(difference + ("" if rel is None else " (another machine: a tolerance applies)"))
    if rel is None and pinned["final_sha256"] != entry["final_sha256"]:  # every bit of the trained weights
        problems.append(f"the weights after step {STEPS} differ: sha256 pinned {pinned['final_sha256'][:16]}..., now "
                        f"{entry['final_sha256'][:16]}...")  # fmt: skip
    if problems:
        pytest.fail(f"{key}: " + "; ".join(problems) + f". {repin}")


def test_reference_holds_only_this_matrix():
    """An entry of a combination that no longer exists would never be checked again: it fails here (and a re-pin
    removes it)."""
    keys = {combination_key(*c) for c in MATRIX}
    if REGEN:
        with reference_for_update() as reference:
            for stale in set(reference["entries"]) - keys:
                del reference["entries"][stale]
    reference = load_reference()
    stale = sorted(set(reference["entries"]) - keys)
    assert not stale, f"{REFERENCE.name} pins combinations the guard no longer runs: {stale}; re-pin to drop them"
    assert reference["about"] == ABOUT
    for key, entry in reference["entries"].items():
        assert "skipped" in entry or entry["machine"] in reference["machines"], f"{key}: its machine is not recorded"
