"""Weight noise (model.weight_noise, rnnlab/models/weight_noise.py) on both backends.

Oracle: one SGD step taken by hand with torch autograd at the noisy weights w0 + ε (ε drawn by name, as the
module documents) gives w1 = w0 - lr * grad; each backend's own training step must land on that w1, and leave no
noise behind. Then both backends through the Lightning loop (the same losses step by step, with gradient
accumulation too), a resumed run equal to an uninterrupted one, and the config check.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from test_guard import TASKS as TASK_SETTINGS
from test_guard import train_losses

from rnnlab.errors import ConfigError
from rnnlab.models.init import init_parameters
from rnnlab.models.spec import NetSpec
from rnnlab.models.weight_noise import draw
from rnnlab.tasks.classify import ClassifyTask

pytestmark = pytest.mark.unit

B, T, VOCAB, CLASSES, SEED, STD, LR = 4, 6, 9, 3, 5, 0.3, 0.5


def task(backend: str, cell: str = "lstm", variant: str = "peephole") -> ClassifyTask:
    spec = NetSpec(cell, vocab_size=VOCAB, embed_dim=5, hidden_size=6, num_layers=2, bidirectional=True,
                   num_outputs=CLASSES, padding_idx=0, variant=variant)  # fmt: skip
    t = ClassifyTask(spec=spec.to_dict(), optimizer={"name": "sgd", "lr": LR, "momentum": 0.0, "dampening": 0.0,
                     "nesterov": False, "weight_decay": 0.0}, task={"name": "classify"},
                     vocab=[f"t{i}" for i in range(VOCAB)], seed=SEED, backend=backend, dtype="float64",
                     weight_noise=STD)  # fmt: skip
    t.backend.finish_build(t, True, lambda: init_parameters(spec, SEED))
    return t


def batch() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    rng = np.random.default_rng(1)
    lengths = np.array([T, 3, 5, 1])
    x = rng.integers(1, VOCAB, (B, T))
    x[np.arange(T)[None, :] >= lengths[:, None]] = 0
    return torch.as_tensor(x), torch.as_tensor(lengths), torch.as_tensor(rng.integers(0, CLASSES, B))


def test_the_draw_is_gaussian_and_keyed_by_name_and_step():
    a = draw("weight_hh_l0", (400, 500), 0.075, seed=1, step=3)
    assert abs(a.mean()) < 0.075 * 5 / math.sqrt(a.size)
    assert a.std() == pytest.approx(0.075, rel=0.01)
    np.testing.assert_array_equal(a, draw("weight_hh_l0", (400, 500), 0.075, seed=1, step=3))
    for other in (
        draw("weight_ih_l0", (400, 500), 0.075, 1, 3),
        draw("weight_hh_l0", (400, 500), 0.075, 1, 4),
        draw("weight_hh_l0", (400, 500), 0.075, 2, 3),
        draw("weight_hh_l0", (400, 500), 0.075, 1, 3, 1),
    ):
        assert np.corrcoef(a.ravel(), other.ravel())[0, 1] < 0.01  # fmt: skip


@pytest.mark.parametrize(("cell", "variant"), [("lstm", "peephole"), ("gru", "cho2014"), ("rnn", "standard")])
def test_one_step_of_each_backend_equals_sgd_at_the_noisy_weights(cell, variant):
    data = batch()
    # the oracle: torch autograd at w0 + eps, on a module of its own
    ref = task("torch", cell, variant)
    w0 = {n: p.detach().clone() for n, p in ref.net.named_parameters()}
    with torch.no_grad():
        for n, p in ref.net.named_parameters():
            p.add_(torch.from_numpy(draw(n, tuple(p.shape), STD, SEED, 0)))
    logits, _ = ref.backend.predict(ref, ref.net_inputs(data))
    noisy_loss = ref.objective.torch(logits, ref.batch_targets(data))
    grads = torch.autograd.grad(noisy_loss, [p for _, p in ref.net.named_parameters()])
    expected = {n: (w0[n] - LR * g).numpy() for (n, _), g in zip(ref.net.named_parameters(), grads, strict=True)}
    clean_loss = ref.objective.torch(ref.backend.predict(task("torch", cell, variant), ref.net_inputs(data))[0],
                                     ref.batch_targets(data))  # fmt: skip
    assert abs(float(noisy_loss.detach()) - float(clean_loss.detach())) > 1e-3  # the noise is large enough to matter

    # the torch backend: its training step, autograd, on_after_backward, torch.optim
    t = task("torch", cell, variant)
    optimizer = t.backend.configure_optimizers(t)
    loss, _, _ = t.backend.training_step(t, data, 0)
    assert float(loss.detach()) == pytest.approx(float(noisy_loss.detach()), rel=1e-12)
    loss.backward()
    t.backend.on_after_backward(t)
    np.testing.assert_array_equal(t.backend.weights(t.net)["head.weight"], w0["head.weight"].numpy())  # clean again
    optimizer.step()
    # the NumPy backend: its own training step (noise, forward, backward, restore, its SGD)
    n = task("numpy", cell, variant)
    numpy_optimizer = n.backend.configure_optimizers(n)
    n.optimizers = lambda: numpy_optimizer  # what Lightning hands a manual-optimization module
    numpy_loss, _, _ = n.backend.training_step(n, data, 0)
    assert float(numpy_loss) == pytest.approx(float(noisy_loss.detach()), rel=1e-12)
    for name, want in expected.items():
        np.testing.assert_allclose(t.backend.weights(t.net)[name], want, rtol=1e-11, atol=1e-13, err_msg=name)
        np.testing.assert_allclose(n.backend.weights(n.net)[name], want, rtol=1e-11, atol=1e-13, err_msg=name)


COMMON = ("model.hidden_size=6", "model.embed_dim=5", "logger=csv", "threads=1", "trainer.max_steps=8",
          "trainer.max_epochs=null", "trainer.log_every_n_steps=1", "trainer.limit_val_batches=0",
          "trainer.num_sanity_val_steps=0", "callbacks.model_checkpoint=null", "run_test=false", "print_sample=false",
          "trainer.precision=64")  # fmt: skip


@pytest.mark.compose
@pytest.mark.parametrize(
    ("task_name", "extra"),
    [("classify", ("model=lstm", "model.variant=peephole", "trainer.accumulate_grad_batches=2")),
     ("polyphonic", ("model=gru", "model.variant=cho2014")), ("language_model", ("model=rnn",))],
)  # fmt: skip
def test_both_backends_train_alike_from_the_command_line(compose, tmp_path, task_name, extra):
    from rnnlab.train import train

    losses = {}
    for backend in ("numpy", "torch"):
        cfg = compose(*COMMON, *TASK_SETTINGS[task_name], *extra, f"model.backend={backend}",
                      "model.weight_noise=0.075", run_dir=tmp_path / backend)  # fmt: skip
        train(cfg)
        losses[backend] = train_losses(Path(cfg.paths.run_dir))
        assert all(math.isfinite(v) for v in losses[backend])
    if "trainer.accumulate_grad_batches=2" in extra:  # NumPy logs every batch, torch the last of each step's two
        losses["numpy"] = losses["numpy"][1::2]
    np.testing.assert_allclose(losses["numpy"], losses["torch"], rtol=1e-9)
    plain = compose(*COMMON, *TASK_SETTINGS[task_name], *extra, run_dir=tmp_path / "plain")
    train(plain)
    assert not np.allclose(train_losses(Path(plain.paths.run_dir)), losses["torch"], rtol=1e-6)


@pytest.mark.compose
@pytest.mark.parametrize("backend", ["torch", "numpy"])
def test_resume_with_weight_noise_equals_uninterrupted(compose, tmp_path, backend):
    from test_resume import RUN, assert_same_outcome

    from rnnlab.train import train

    settings = (*RUN, f"model.backend={backend}", "model.weight_noise=0.05")
    train(compose(*settings, run_dir=tmp_path / "whole"))
    train(compose(*settings, "trainer.max_steps=3", run_dir=tmp_path / "first"))
    train(compose(*settings, f"ckpt_path={tmp_path / 'first' / 'checkpoints' / 'last.ckpt'}",
                  run_dir=tmp_path / "resumed"))  # fmt: skip
    assert_same_outcome(tmp_path / "resumed", tmp_path / "whole", backend, 3)


@pytest.mark.compose
@pytest.mark.parametrize("value", ["-0.1", "nan"])
def test_a_bad_value_is_one_line(compose, tmp_path, value):
    from rnnlab.config import validate

    with pytest.raises(ConfigError, match=rf"model\.weight_noise must be >= 0, got {value}"):
        validate(compose("model=lstm", f"model.weight_noise={value}", run_dir=tmp_path))
