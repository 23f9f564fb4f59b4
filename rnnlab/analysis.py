"""Why LSTM and GRU exist, in pictures: gradient flow through time, gradient norms per layer, hidden-state
trajectories, gate activations and cell states, for runs on either backend and every cell.

The pictures that need the inside of the recurrence (the gradient reaching each timestep's hidden state, the gate
activations, the cell state) are computed by the NumPy implementation, used as a glass box: a float64 NumPy copy of
the task is given the run's current weights (from either backend) and runs the task's own NumPy forward and backward
on a fixed batch. Its outputs and gradients equal torch autograd's to 1e-10 (tests/test_numpy_layers.py), so for a
torch run they are the torch model's numbers, and torch's fused kernels need no unrolling or hooks. Each cell shows
what its forward pass computed inside through the cell protocol (``Cell.internals``, held to the torch cell's own
gates by tests/test_analysis.py), so no picture knows a cell by name.

``AnalysisPictures`` (``callbacks=analysis``) logs, at every validation:

* ``analysis/hidden_grad_norm``: ||dL/dh_t|| for every timestep t (log scale), per layer and direction: the
  gradient that reaches step t from the loss. A vanilla RNN's curve falls off exponentially away from the steps the
  loss reads; LSTM and GRU keep it up (the vanishing-gradient problem);
* ``analysis/grad_norm_per_layer``: the norm of each layer's parameter gradient over training (also logged as
  scalars ``grad_norm/<layer>`` on the steps the loggers write, every ``trainer.log_every_n_steps``);
* ``analysis/hidden_pca``: the top layer's hidden states of a few sequences projected on their first two principal
  components, each sequence a trajectory through time;
* ``analysis/gates``: the gate activations of the first layer's forward direction over time for one sequence, one
  heatmap per gate the cell has (the cell's ``internals`` whose names are in its ``gate_names``: the LSTM's i, f,
  g, o, a variant's own subset, the GRU's r, z, n, the MGU's f, n); a cell without gates (the plain RNN) has none;
* ``analysis/cell_state``: the same for the cell's other internals, its states but h (the LSTM family's c_t).

Sigmoid gates (the cell's ``sigmoid_gates``) are drawn on [0, 1], everything else on a range symmetric around 0.
"""

from __future__ import annotations

import re
from typing import Any

import lightning as L
import numpy as np

LAYER = re.compile(r"_l(\d+)(_reverse)?$")


# ----------------------------------------------------------------------------------------------- glass box
def current_weights(task: Any) -> dict[str, np.ndarray]:
    """The task network's parameters as float64 arrays by torch's names, whichever backend holds them."""
    return task.backend.weights(task.net)


def glass_box(task: Any) -> Any:
    """A float64 NumPy-backend copy of ``task`` holding its current weights (the task itself is not touched)."""
    hparams = dict(task.hparams)
    hparams.update(backend="numpy", dtype="float64")
    clone = type(task)(**hparams)
    clone.net.load_arrays(current_weights(task))
    return clone


def batch_slice(batch: Any, n: int) -> Any:
    """The first ``n`` samples of a batch (a tuple of tensors with the batch on the first axis)."""
    return type(batch)(t[:n] for t in batch) if isinstance(batch, tuple | list) else batch[:n]


def hidden_gradient_norms(task: Any, batch: Any, clone: Any = None) -> np.ndarray:
    """||dL/dh_t|| over the batch for every layer/direction and step, [num_layers * num_directions, T], from the
    task's own loss (its head and objective, through the NumPy backend's ``loss_and_backward``) at the current
    weights (``clone``: a ``glass_box(task)`` to reuse)."""
    clone = clone if clone is not None else glass_box(task)
    stack = clone.net.stack
    T = int(task.analysis_inputs(batch)[0].shape[1])
    norms = stack.dh_norms = np.zeros((stack.num_layers * stack.num_directions, T))
    try:
        clone.backend.loss_and_backward(clone, batch)
    finally:
        stack.dh_norms = None  # record during this backward only
    return norms


def hidden_states_and_gates(
    task: Any, batch: Any, clone: Any = None
) -> tuple[np.ndarray, np.ndarray | None, dict[str, np.ndarray]]:
    """Top-layer outputs [B, T, H * D], lengths [B] (or None) and the first layer's forward-direction internals (the
    cell's ``internals``: gate activations and states but h by name, [T, B, H] each, NaN past a sequence's length;
    in the batch's own order; empty for a cell without gates), evaluated without dropout."""
    clone = clone if clone is not None else glass_box(task)
    x, lengths = task.analysis_inputs(batch)
    x = x.cpu().numpy()
    lengths = None if lengths is None else lengths.cpu().numpy()
    out, _, cache = clone.net.forward(x, lengths, train=False)
    internals = clone.net.stack.cell.internals(cache.stack.layers[0].cells[0])  # in the packing order
    if cache.inverse is not None:
        internals = {name: a[:, cache.inverse] for name, a in internals.items()}
    return out, lengths, internals


def pca_2d(states: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Rows of ``states`` [N, F] projected on their first two principal components, and the explained variance
    ratios of those two."""
    centred = states - states.mean(axis=0, keepdims=True)
    _, s, vt = np.linalg.svd(centred, full_matrices=False)
    var = s**2
    total = var.sum()
    ratios = var[:2] / total if total > 0 else np.zeros(2)
    return centred @ vt[:2].T, ratios


def layer_of(name: str) -> str:
    """Parameter name -> layer group: ``embedding``, ``head``, ``rnn.l<k>`` (both directions together)."""
    if name.startswith("rnn."):
        match = LAYER.search(name)
        return f"rnn.l{match.group(1)}" if match else "rnn"
    return name.split(".", 1)[0]


def gradient_norms_per_layer(task: Any) -> dict[str, float]:
    """The 2-norm of each layer group's gradient as it stands (after backward, before the optimizer step)."""
    squares: dict[str, float] = {}
    for name, g in task.backend.gradients(task.net):
        group = layer_of(name)
        squares[group] = squares.get(group, 0.0) + float(np.vdot(g, g))
    return {group: float(np.sqrt(v)) for group, v in squares.items()}


# -------------------------------------------------------------------------------------------------- figures
def plot_hidden_grad_norms(norms: np.ndarray, spec: Any, title: str) -> Any:
    from rnnlab.plots import new_figure

    fig = new_figure(6.5, 3.8)
    ax = fig.add_subplot()
    D = 2 if spec.bidirectional else 1
    steps = np.arange(1, norms.shape[1] + 1)
    for k, row in enumerate(norms):
        label = f"layer {k // D}" + (" reverse" if k % D else "")
        ax.semilogy(steps, np.maximum(row, 1e-30), label=label)
    ax.set_xlabel("timestep t")
    ax.set_ylabel("||dL/dh_t||")
    ax.set_title(title)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    return fig


def plot_grad_history(steps: list[int], history: dict[str, list[float]], title: str) -> Any:
    from rnnlab.plots import new_figure

    fig = new_figure(6.5, 3.8)
    ax = fig.add_subplot()
    for group, values in history.items():
        ax.semilogy(steps[: len(values)], np.maximum(values, 1e-30), label=group)
    ax.set_xlabel("training step")
    ax.set_ylabel("gradient norm")
    ax.set_title(title)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    return fig


def plot_pca(out: np.ndarray, lengths: np.ndarray | None, title: str, max_sequences: int = 8) -> Any:
    from rnnlab.plots import new_figure

    B, T, _ = out.shape
    n = min(B, max_sequences)
    lens = np.full(B, T) if lengths is None else np.asarray(lengths)
    states = np.concatenate([out[b, : lens[b]] for b in range(n)])
    points, ratios = pca_2d(states)
    fig = new_figure(5.5, 4.5)
    ax = fig.add_subplot()
    start = 0
    for b in range(n):
        p = points[start : start + lens[b]]
        start += lens[b]
        line = ax.plot(p[:, 0], p[:, 1], marker=".", markersize=3, linewidth=1)[0]
        ax.scatter(p[-1:, 0], p[-1:, 1], color=line.get_color(), marker="x")
    ax.set_xlabel(f"PC1 ({ratios[0]:.0%} of variance)")
    ax.set_ylabel(f"PC2 ({ratios[1]:.0%})")
    ax.set_title(title)
    return fig


def plot_internals(
    internals: dict[str, np.ndarray], cell: Any, length: int, title: str, units: int = 32, sequence: int = 0
) -> Any:
    """Heatmaps of ``internals`` ([T, B, H] each) of one sequence up to ``length`` (time on x, the first ``units``
    hidden units on y), one per entry, titled by ``cell.internal_title``: the cell's sigmoid gates on [0, 1], the
    others on a range symmetric around 0 (their largest magnitude)."""
    from matplotlib.ticker import MaxNLocator

    from rnnlab.plots import new_figure

    n = len(internals)
    cols = 1 if n == 1 else 2
    rows = -(-n // cols)
    fig = new_figure(4.0 * cols, 2.5 * rows + 0.5)
    for k, (name, a) in enumerate(internals.items()):
        ax = fig.add_subplot(rows, cols, k + 1)
        values = a[:length, sequence, :units].T
        if name in cell.sigmoid_gates:
            cmap, vmin, vmax = "viridis", 0.0, 1.0
        else:
            finite = np.abs(values[np.isfinite(values)])
            m = float(finite.max()) if finite.size and finite.max() > 0 else 1.0
            cmap, vmin, vmax = "coolwarm", -m, m
        image = ax.imshow(values, aspect="auto", cmap=cmap, vmin=vmin, vmax=vmax, interpolation="nearest")
        ax.set_title(cell.internal_title(name), fontsize=9)
        ax.set_xlabel("timestep", fontsize=8)
        ax.set_ylabel("unit", fontsize=8)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.yaxis.set_major_locator(MaxNLocator(integer=True))
        fig.colorbar(image, ax=ax)
    fig.suptitle(title)
    return fig


# ------------------------------------------------------------------------------------------------- callback
class AnalysisPictures(L.Callback):
    """Logs the pictures of the module docstring at every validation (not during the sanity check), on a fixed
    batch: the first ``num_sequences`` samples of the first validation batch, the same for both backends."""

    def __init__(self, num_sequences: int = 16, max_pca_sequences: int = 8) -> None:
        super().__init__()
        self.num_sequences = num_sequences
        self.max_pca_sequences = max_pca_sequences
        self.batch: Any = None
        self.steps: list[int] = []
        self.history: dict[str, list[float]] = {}

    def _fixed_batch(self, trainer: Any) -> Any:
        if self.batch is None:
            loaders = trainer.datamodule.val_dataloader() if trainer.datamodule is not None else None
            if loaders is None:
                return None
            self.batch = batch_slice(next(iter(loaders)), self.num_sequences)
        return self.batch

    def on_before_optimizer_step(self, trainer: Any, pl_module: Any, optimizer: Any) -> None:
        # on the steps the loggers write (trainer.log_every_n_steps), which keeps the cost out of the other steps
        every = max(1, int(getattr(trainer, "log_every_n_steps", 1) or 1))
        if not hasattr(pl_module, "analysis_inputs") or (trainer.global_step + 1) % every:
            return
        norms = gradient_norms_per_layer(pl_module)
        self.steps.append(int(trainer.global_step))
        for group, value in norms.items():
            self.history.setdefault(group, []).append(value)
            pl_module.log(f"grad_norm/{group}", value, on_step=True, on_epoch=False)

    def on_validation_end(self, trainer: Any, pl_module: Any) -> None:
        if trainer.sanity_checking or trainer.global_rank != 0 or not hasattr(pl_module, "analysis_inputs"):
            return
        if getattr(pl_module.net, "stack", None) is None and not hasattr(pl_module.net, "rnn"):
            return  # not a single recurrent stack (e.g. an encoder-decoder)
        from rnnlab.plots import log_figure

        batch = self._fixed_batch(trainer)
        if batch is None:
            return
        spec = pl_module.spec
        variant = getattr(spec, "variant", "standard")
        cell = spec.cell if variant == "standard" else f"{spec.cell}/{variant}"
        what = f"{cell} ({pl_module.backend}), step {trainer.global_step}"
        clone = glass_box(pl_module)  # one float64 copy of the current weights for every picture
        norms = hidden_gradient_norms(pl_module, batch, clone)
        log_figure(pl_module, "analysis/hidden_grad_norm",
                   plot_hidden_grad_norms(norms, spec, f"gradient through time: {what}"))  # fmt: skip
        if self.steps:
            log_figure(pl_module, "analysis/grad_norm_per_layer",
                       plot_grad_history(self.steps, self.history, f"gradient norm per layer: {what}"))  # fmt: skip
        out, lengths, internals = hidden_states_and_gates(pl_module, batch, clone)
        log_figure(pl_module, "analysis/hidden_pca",
                   plot_pca(out, lengths, f"hidden states, PCA: {what}", self.max_pca_sequences))  # fmt: skip
        cell_obj = clone.net.stack.cell
        length = int(lengths[0]) if lengths is not None else out.shape[1]
        gates = {name: a for name, a in internals.items() if name in cell_obj.gate_names}
        states = {name: a for name, a in internals.items() if name not in gates}
        for tag, part, kind in (("analysis/gates", gates, "gates"), ("analysis/cell_state", states, "cell state")):
            if part:  # (none for the plain RNN: its state h is in the PCA picture)
                title = f"{kind} of layer 0, sequence 0: {what}"
                log_figure(pl_module, tag, plot_internals(part, cell_obj, length, title))
