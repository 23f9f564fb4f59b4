"""Every registered cell variant trains every registered task on both backends, from the same commands as the
built-in cells (``model=lstm model.variant=peephole task=...``), and the two backends agree.

Each (variant, task) pair composes the real config with the guard's small per-task settings (tests/test_guard.py),
trains 6 steps in float64 on one thread on each backend, and compares the per-step training losses read back from
the run's metrics.csv: with the same initial weights, data and optimizer formula, and no dropout, the NumPy backend
and torch autograd on the cell's torch counterpart compute the same numbers up to summation order (1e-9
relative). The standard cells are covered, bit for bit, by the guard itself.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
from test_guard import TASKS as TASK_SETTINGS
from test_guard import train_losses

from rnnlab.registry import CELLS, TASKS

pytestmark = pytest.mark.compose

STEPS = 6
VARIANTS = [(e.name, e.variant) for e in CELLS.entries() if e.variant != "standard"]
COMMON = ("model.hidden_size=6", "model.embed_dim=5", "model.num_layers=2", "model.dropout=0.0", "logger=csv",
          "threads=1", f"trainer.max_steps={STEPS}", "trainer.max_epochs=null", "trainer.log_every_n_steps=1",
          "trainer.limit_val_batches=0", "trainer.num_sanity_val_steps=0", "callbacks.model_checkpoint=null",
          "run_test=false", "print_sample=false", "trainer.precision=64")  # fmt: skip
BIDIRECTIONAL = {"classify", "tag", "regress", "forecast", "seq2seq"}  # the tasks that take a backward direction


def test_every_task_has_settings_here():
    assert set(TASKS.names()) <= set(TASK_SETTINGS), "a registered task has no small settings in tests/test_guard.py"


@pytest.mark.parametrize(("cell", "variant"), VARIANTS, ids=[f"{c}-{v}" for c, v in VARIANTS])
@pytest.mark.parametrize("task", sorted(TASK_SETTINGS))
def test_variant_trains_every_task_on_both_backends(compose, tmp_path, cell, variant, task):
    from rnnlab.train import train

    losses = {}
    for backend in ("numpy", "torch"):
        both_ways = str(task in BIDIRECTIONAL).lower()
        overrides = [*COMMON, *TASK_SETTINGS[task], f"model={cell}", f"model.variant={variant}",
                     f"model.backend={backend}", f"model.bidirectional={both_ways}"]  # fmt: skip
        cfg = compose(*overrides, run_dir=tmp_path / backend)
        result = train(cfg)
        assert result.objects["model"].net.spec.variant == variant
        losses[backend] = train_losses(Path(cfg.paths.run_dir))
        assert len(losses[backend]) == STEPS
        assert all(math.isfinite(v) for v in losses[backend])
    np.testing.assert_allclose(losses["numpy"], losses["torch"], rtol=1e-9, err_msg=f"{cell}/{variant} {task}")


@pytest.mark.parametrize(
    ("options", "recorded"),
    [(("model=lstm", "model.init=orthogonal", "model.forget_bias=1.0"), ("orthogonal", 1.0)),
     (("model=rnn", "model.nonlinearity=relu", "model.init=identity"), ("identity", 0.0))],
)  # fmt: skip
def test_initialisations_train_alike_on_both_backends(compose, tmp_path, options, recorded):
    """model.init and model.forget_bias go through the one initializer: both backends start from the same weights
    and agree step by step; the options are recorded in the checkpoint's spec."""
    from rnnlab.train import train

    losses = {}
    for backend in ("numpy", "torch"):
        cfg = compose(*COMMON, *TASK_SETTINGS["classify"], *options, f"model.backend={backend}",
                      run_dir=tmp_path / backend)  # fmt: skip
        result = train(cfg)
        spec = result.objects["model"].hparams["spec"]
        assert (spec["init"], spec["forget_bias"]) == recorded
        losses[backend] = train_losses(Path(cfg.paths.run_dir))
    np.testing.assert_allclose(losses["numpy"], losses["torch"], rtol=1e-9)
