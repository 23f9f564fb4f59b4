"""rnnlab.analysis: the glass-box gradient through time against torch autograd on an unrolled torch network, the
per-layer gradient norms, PCA, and the pictures a run with callbacks=analysis writes on either backend."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from torch.nn import functional as F

from rnnlab.analysis import current_weights, gradient_norms_per_layer, hidden_gradient_norms, layer_of, pca_2d
from rnnlab.models.init import init_parameters
from rnnlab.models.spec import NetSpec
from rnnlab.tasks.classify import ClassifyTask
from rnnlab.train import train

pytestmark = pytest.mark.unit

B, T = 4, 12


def classify_task(cell: str, backend: str, num_layers: int = 1, bidirectional: bool = False) -> ClassifyTask:
    spec = NetSpec(cell, vocab_size=6, embed_dim=3, hidden_size=5, num_layers=num_layers,
                   bidirectional=bidirectional, num_outputs=2)  # fmt: skip
    task = ClassifyTask(spec=spec.to_dict(), optimizer={"name": "sgd", "lr": 0.1}, task={"name": "classify"},
                        vocab=list("abcdef"), seed=5, backend=backend, dtype="float64")  # fmt: skip
    if backend == "torch":  # float64 weights from the float64 draws (as rnnlab.train does), not f32 roundings
        task = task.double()
        task.net.load_arrays(init_parameters(spec, 5))
    return task


def batch(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    rng = np.random.default_rng(seed)
    return (torch.as_tensor(rng.integers(0, 6, (B, T))), torch.full((B,), T), torch.as_tensor(rng.integers(0, 2, B)))


def unrolled_torch_norms(task: ClassifyTask, x: torch.Tensor, y: torch.Tensor) -> np.ndarray:
    """||dL/dh_t|| per layer from torch autograd: each layer of the task's own weights runs one step at a time, and
    one tensor h_t serves as the next step's state and the next layer's input, so its gradient is the total one."""
    net = task.net
    spec = net.spec
    kw = {"nonlinearity": spec.nonlinearity} if spec.cell == "rnn" else {}
    seq = net.embed(x)
    hs: list[list[torch.Tensor]] = []
    for k in range(spec.num_layers):
        layer = type(net.rnn)(seq.shape[-1], spec.hidden_size, 1, batch_first=True, **kw).double()
        with torch.no_grad():
            for name, p in layer.named_parameters():
                p.copy_(getattr(net.rnn, name.replace("_l0", f"_l{k}")))
        state, outs, layer_hs = None, [], []
        for t in range(T):
            _, state = layer(seq[:, t : t + 1], state)
            h = state[0] if isinstance(state, tuple) else state
            h.retain_grad()
            layer_hs.append(h)
            outs.append(h[0])
        seq = torch.stack(outs, dim=1)
        hs.append(layer_hs)
    F.cross_entropy(net.head(seq[:, -1]), y).backward()
    return np.array([[h.grad.norm().item() for h in layer_hs] for layer_hs in hs])


@pytest.mark.parametrize("cell", ["rnn", "lstm", "gru"])
def test_gradient_through_time_equals_unrolled_torch_autograd(cell):
    task = classify_task(cell, "torch", num_layers=2)
    x, lengths, y = batch()
    ours = hidden_gradient_norms(task, (x, lengths, y))
    assert all(p.grad is None for p in task.parameters())  # the glass box left the task alone
    expected = unrolled_torch_norms(task, x, y)
    np.testing.assert_allclose(ours, expected, rtol=1e-8, atol=1e-14)


def test_vanilla_rnn_gradient_vanishes_where_lstm_keeps_it():
    """Small recurrent weights: the RNN's gradient at t=1 is orders of magnitude below the one at T; the LSTM
    with its forget gate pushed open keeps much more of it."""
    x, lengths, y = batch(1)
    rnn = classify_task("rnn", "numpy")
    for name, p in rnn.net.params.items():
        if "weight_hh" in name:
            p *= 0.3
    lstm = classify_task("lstm", "numpy")
    for name, p in lstm.net.params.items():
        if name.startswith("rnn.bias_ih"):
            p[5:10] = 5.0  # forget-gate rows (i, f, g, o; H = 5)
    r = hidden_gradient_norms(rnn, (x, lengths, y))[0]
    m = hidden_gradient_norms(lstm, (x, lengths, y))[0]
    assert r[0] / r[-1] < 1e-3
    assert m[0] / m[-1] > 100 * (r[0] / r[-1])


@pytest.mark.parametrize("backend", ["torch", "numpy"])
def test_gradient_norms_per_layer(backend):
    task = classify_task("gru", backend, num_layers=2, bidirectional=True)
    x, lengths, y = batch()
    if backend == "torch":
        F.cross_entropy(task(x, lengths), y).backward()
    else:
        task.backend.loss_and_backward(task, (x, lengths, y))
    norms = gradient_norms_per_layer(task)
    assert set(norms) == {"embedding", "rnn.l0", "rnn.l1", "head"}
    grads = (
        task.net.grads if backend == "numpy" else {n: p.grad.double().numpy() for n, p in task.net.named_parameters()}
    )
    expected = np.sqrt(sum(np.sum(g**2) for n, g in grads.items() if layer_of(n) == "rnn.l1"))
    assert norms["rnn.l1"] == pytest.approx(expected, rel=1e-12)
    assert layer_of("rnn.weight_hh_l1_reverse") == "rnn.l1"


def test_weights_are_read_from_either_backend():
    a, b = classify_task("lstm", "torch"), classify_task("lstm", "numpy")
    wa, wb = current_weights(a), current_weights(b)
    assert wa.keys() == wb.keys()
    for name in wa:
        np.testing.assert_array_equal(wa[name], wb[name])  # the shared initializer, in float64


def test_pca_of_points_on_a_line():
    t = np.linspace(-1, 1, 50)[:, None]
    points, ratios = pca_2d(np.hstack([t, 2 * t, -t]) + 3.0)
    assert ratios[0] == pytest.approx(1.0)
    np.testing.assert_allclose(np.abs(points[:, 0]), np.abs(t[:, 0]) * np.sqrt(6), rtol=1e-10)


@pytest.mark.compose
@pytest.mark.parametrize("backend", ["torch", "numpy"])
def test_a_run_with_callbacks_analysis_writes_the_pictures(compose, tmp_path, backend):
    settings = ["task=classify", "data=synthetic_text", "data.num_samples=200", "data.batch_size=16", "model=lstm",
                "model.hidden_size=6", "model.embed_dim=4", "trainer.max_steps=4", "trainer.val_check_interval=2",
                "trainer.max_epochs=null", "trainer.log_every_n_steps=1", "trainer.limit_val_batches=1",
                "trainer.limit_test_batches=1", "callbacks=analysis", f"model.backend={backend}"]  # fmt: skip
    cfg = compose(*settings, run_dir=tmp_path / "run")
    train(cfg)
    figures = tmp_path / "run" / "figures"
    for tag in ("analysis_hidden_grad_norm", "analysis_grad_norm_per_layer", "analysis_hidden_pca",
                "analysis_lstm_gates"):  # fmt: skip
        assert sorted(p.name for p in (figures / tag).glob("*.png")) == ["step_0000002.png", "step_0000004.png"]
    metrics = pd.read_csv(tmp_path / "run" / "csv" / "metrics.csv")
    assert metrics["grad_norm/rnn.l0"].notna().sum() == 4
    assert (metrics["grad_norm/head"].dropna() > 0).all()
