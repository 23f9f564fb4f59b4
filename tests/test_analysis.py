"""rnnlab.analysis: the glass-box gradient through time against torch autograd on an unrolled torch network, the
per-layer gradient norms, PCA, every registered cell's internals (gate activations, cell states) against its torch
cell's, and the pictures a run with callbacks=analysis writes on either backend."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import pytest
import torch
from torch.nn import functional as F

from rnnlab.analysis import (
    current_weights,
    gradient_norms_per_layer,
    hidden_gradient_norms,
    hidden_states_and_gates,
    layer_of,
    pca_2d,
    plot_internals,
)
from rnnlab.cells.protocol import cell_class, cell_for
from rnnlab.models.init import init_parameters
from rnnlab.models.numpy.net import NumpyRecurrentNet
from rnnlab.models.spec import NetSpec
from rnnlab.models.torch.recurrent import TorchRecurrentNet
from rnnlab.registry import CELLS
from rnnlab.tasks.classify import ClassifyTask
from rnnlab.train import train

pytestmark = pytest.mark.unit

B, T = 4, 12
CELL_KEYS = [(e.name, e.variant) for e in CELLS.entries()]
IDS = [f"{n}-{v}" for n, v in CELL_KEYS]


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


# ------------------------------------------------------------------------------ internals: gates and cell states
def torch_internals(net: TorchRecurrentNet, x: np.ndarray, lengths: np.ndarray, direction: int) -> tuple[dict, Any]:
    """The first layer's gate activations (recorded by the cell's own ``torch_step``) and states but h, [T, B, H]
    each in the batch's order, from the torch network's weights, one step at a time in float64, as packed sequences
    run (the reverse direction starts at each sequence's end); and the hidden states h [B, T, H] of that run."""
    cell = cell_for(net.spec)
    sfx = "_l0" + ("_reverse" if direction else "")
    p = {base: getattr(net.rnn, base + sfx) for base, _ in cell.parameter_shapes(net.spec.input_size)}
    Bx, Tx = x.shape
    with torch.no_grad():
        x_side = net.embed(torch.as_tensor(x)) @ p["weight_ih"].T + p["bias_ih"]  # [B, T, G*H]
        state = tuple(torch.zeros(Bx, cell.hidden_size, dtype=torch.float64) for _ in cell.states)
        steps: dict[str, list] = {}
        hs = [None] * Tx
        for t in range(Tx - 1, -1, -1) if direction else range(Tx):
            record: dict[str, torch.Tensor] = {}
            new = cell.torch_step(x_side[:, t], state, p, record=record)
            assert set(record) == set(cell.gate_names) - {"h"}  # every gate (the plain RNN's one block is h itself)
            valid = torch.as_tensor(t < lengths)[:, None]
            state = tuple(torch.where(valid, n, s) for n, s in zip(new, state, strict=True))
            record.update(zip(cell.states[1:], new[1:], strict=True))
            for name, value in record.items():
                steps.setdefault(name, [None] * Tx)[t] = value.numpy()
            hs[t] = state[0].numpy()
    return {name: np.stack(v) for name, v in steps.items()}, np.stack(hs, axis=1)


@pytest.mark.parametrize(("cell", "variant"), CELL_KEYS, ids=IDS)
def test_internals_equal_the_torch_cells_gates_and_states(cell, variant):
    """Every registered cell's ``internals`` of the NumPy forward (both directions of a bidirectional first layer,
    variable lengths in an unsorted batch) equal the gate activations its torch cell computes with the same weights,
    step by step in float64, and its states but h; NaN past each sequence's length."""
    spec = NetSpec(cell, vocab_size=7, embed_dim=5, hidden_size=6, num_layers=1, bidirectional=True, num_outputs=3,
                   variant=variant)  # fmt: skip
    numpy_net = NumpyRecurrentNet(spec, 3, dtype=np.float64)
    torch_net = TorchRecurrentNet(spec, 3).double()
    torch_net.load_arrays(init_parameters(spec, 3))
    cell_obj = numpy_net.stack.cell
    rng = np.random.default_rng(4)
    Tn = 6
    x = rng.integers(0, 7, (4, Tn))
    lengths = np.array([4, Tn, 1, 3])  # unsorted: the cache's rows are in another order
    _, _, cache = numpy_net.forward(x, lengths)
    with torch.no_grad():
        t_out, _ = torch_net(torch.as_tensor(x), torch.as_tensor(lengths))
    valid = np.arange(Tn)[:, None] < lengths[None, :]  # [T, B]
    for d in range(2):
        ours = cell_obj.internals(cache.stack.layers[0].cells[d])
        ours = {name: a[:, cache.inverse] for name, a in ours.items()}  # packing order -> the batch's
        expected, hs = torch_internals(torch_net, x, lengths, d)
        # the step-by-step run is the torch module's (torch's fused one for lstm and gru): the same h_t
        h_module = t_out[..., d * 6 : (d + 1) * 6].numpy()
        np.testing.assert_allclose(hs[valid.T], h_module[valid.T], rtol=0, atol=1e-12)
        assert set(ours) == set(expected), (sorted(ours), sorted(expected))
        assert set(ours) == (set(cell_obj.gate_names) - {"h"}) | set(cell_obj.states[1:])
        for name, a in ours.items():
            assert a.shape == (Tn, 4, 6), name
            np.testing.assert_allclose(a[valid], expected[name][valid], rtol=0, atol=1e-12, err_msg=f"{name} d={d}")
            assert np.isnan(a[~valid]).all(), name
            if name in cell_obj.sigmoid_gates:  # the naming rule of the colour scale holds for the values
                assert expected[name][valid].min() > 0, name
                assert expected[name][valid].max() < 1, name
    if cell_obj.gate_names != ("h",):
        assert ours, "a cell with gates shows them"


def test_internals_refuse_a_cache_that_went_through_backward():
    spec = NetSpec("lstm", vocab_size=7, embed_dim=5, hidden_size=6, num_layers=1, bidirectional=False, num_outputs=3)
    net = NumpyRecurrentNet(spec, 3, dtype=np.float64)
    out, _, cache = net.forward(np.zeros((2, 3), dtype=np.int64))
    net.backward(np.ones_like(out), None, cache)
    with pytest.raises(RuntimeError, match="backward"):
        net.stack.cell.internals(cache.stack.layers[0].cells[0])


@pytest.mark.parametrize("cell", ["gru", "lstm"])
def test_hidden_states_and_gates_are_in_the_batchs_order(cell):
    """The glass box of a torch run: the first layer's internals of each sequence of an unsorted batch, in the
    batch's own order, equal the torch network's own gates and states for that sequence."""
    task = classify_task(cell, "torch")
    rng = np.random.default_rng(3)
    lengths = np.array([5, T, 2, 9])
    x = rng.integers(0, 6, (B, T))
    _, lens, internals = hidden_states_and_gates(task, (torch.as_tensor(x), torch.as_tensor(lengths), None))
    expected, _ = torch_internals(task.net, x, lengths, 0)
    assert set(internals) == set(expected) == ({"r", "z", "n"} if cell == "gru" else {"i", "f", "g", "o", "c"})
    valid = np.arange(T)[:, None] < lengths[None, :]
    for name, a in internals.items():
        np.testing.assert_allclose(a[valid], expected[name][valid], rtol=0, atol=1e-12, err_msg=name)
    np.testing.assert_array_equal(lens, lengths)


def test_the_pictures_of_the_internals_name_each_gate_and_scale_it():
    """One heatmap per entry, titled by the cell; sigmoid gates on [0, 1], the others symmetric around 0."""
    cell = cell_class("lstm", "cifg")(4)
    rng = np.random.default_rng(0)
    internals = {"i": rng.random((7, 2, 4)), "g": np.tanh(rng.normal(size=(7, 2, 4))) * 0.5,
                 "o": rng.random((7, 2, 4))}  # fmt: skip
    internals["g"][0, 0, 0] = -0.8  # the largest magnitude of sequence 0
    internals["g"][5:, 0] = np.nan  # past the length
    fig = plot_internals(internals, cell, 5, "gates")
    axes = [ax for ax in fig.axes if ax.images]
    assert [ax.get_title() for ax in axes] == ["input gate i (forget gate f = 1 - i)", "cell candidate g",
                                               "output gate o"]  # fmt: skip
    assert axes[0].images[0].get_clim() == (0.0, 1.0)
    assert axes[1].images[0].get_clim() == pytest.approx((-0.8, 0.8))
    assert axes[1].images[0].get_array().shape == (4, 5)  # units x timesteps, sequence 0 up to its length
    np.testing.assert_array_equal(axes[1].images[0].get_array(), internals["g"][:5, 0].T)


@pytest.mark.compose
@pytest.mark.parametrize(
    ("model", "backend", "pictures"),
    [
        (["model=lstm"], "torch", ("analysis_gates", "analysis_cell_state")),
        (["model=lstm"], "numpy", ("analysis_gates", "analysis_cell_state")),
        (["model=gru"], "torch", ("analysis_gates",)),
        (["model=lstm", "model.variant=cifg"], "numpy", ("analysis_gates", "analysis_cell_state")),
    ],
    ids=["lstm-torch", "lstm-numpy", "gru-torch", "lstm_cifg-numpy"],
)
def test_a_run_with_callbacks_analysis_writes_the_pictures(compose, tmp_path, model, backend, pictures):
    settings = ["task=classify", "data=synthetic_text", "data.num_samples=200", "data.batch_size=16", *model,
                "model.hidden_size=6", "model.embed_dim=4", "trainer.max_steps=4", "trainer.val_check_interval=2",
                "trainer.max_epochs=null", "trainer.log_every_n_steps=1", "trainer.limit_val_batches=1",
                "trainer.limit_test_batches=1", "callbacks=analysis", f"model.backend={backend}"]  # fmt: skip
    cfg = compose(*settings, run_dir=tmp_path / "run")
    train(cfg)
    figures = tmp_path / "run" / "figures"
    for tag in ("analysis_hidden_grad_norm", "analysis_grad_norm_per_layer", "analysis_hidden_pca", *pictures):
        assert sorted(p.name for p in (figures / tag).glob("*.png")) == ["step_0000002.png", "step_0000004.png"]
    assert {p.name for p in figures.iterdir() if p.name.startswith("analysis_")} == {
        "analysis_hidden_grad_norm", "analysis_grad_norm_per_layer", "analysis_hidden_pca", *pictures}  # fmt: skip
    metrics = pd.read_csv(tmp_path / "run" / "csv" / "metrics.csv")
    assert metrics["grad_norm/rnn.l0"].notna().sum() == 4
    assert (metrics["grad_norm/head"].dropna() > 0).all()
