"""Recurrent layers x directions, as torch.nn.RNN / LSTM / GRU with ``num_layers`` and ``bidirectional``.

    x^(0) = input
    out^(l) = [forward_l(x^(l)) ; reverse_l(x^(l))]           (concatenated on the feature axis)
    x^(l+1) = dropout(out^(l))                                 (training only, not after the last layer)
    h_n[l * D + d] = final state of layer l, direction d       (D = 2 if bidirectional else 1; c_n ... likewise)

Dropout is inverted dropout as in torch: each element is kept with probability 1 - p and then scaled by
1 / (1 - p). The masks are drawn from the stack's ``numpy.random.Generator`` and kept in the cache
(``StackCache.layers[l].mask``, the mask applied to layer l's output).

The input side of each direction is one GEMM over all steps. The layer input is stored with an extra column of
ones, x̃ = [x, 1], so that the biases ride in the GEMM:

    Xp = x̃ [T*B, I+1] @ [s ⊙ W_ih | s ⊙ (b_ih + folded b_hh)]^T         (s: the cell's gate scale, rnnlab/cells/lstm.py)
    [dW_ih | db_ih] = dA^T x̃,    dx = dA W_ih                           (one GEMM each)

With one-hot inputs (no embedding) the first layer's input side is instead a row gather of that matrix's
transpose and its weight gradient a scatter-add: no one-hot matrix is ever built. The cells (rnnlab/cells/:
rnn.py, lstm.py, gru.py, ...) run the recurrences and the hidden side (W_hh, b_hh). Everything is time-major,
[T, B, ...].

Variational dropout and zoneout (rnnlab.models.regularisers) arrive as ``masks``: the input and output masks are
applied here around each layer, and a layer with a mask inside the recurrence runs its cell step by step
(rnnlab.models.numpy.stepped).

The stack knows cells only through their protocol (rnnlab/cells/protocol.py): a layer's states are the cell's
``states`` (h; h and c; or more, each [B, H]), passed in as a tuple ``states0`` = (h0, c0, ...) and returned as a
tuple (h_n, c_n, ...), one [L * D, B, H] array per state in the cell's order.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from rnnlab.cells.protocol import Cell, cell_class
from rnnlab.models.numpy import memory
from rnnlab.models.numpy.layers import column_sum, one_hot_projection_backward
from rnnlab.models.numpy.stepped import SteppedCell
from rnnlab.models.regularisers import LayerMasks


def _zones(z: np.ndarray | float) -> bool:
    return isinstance(z, np.ndarray) or z > 0


@dataclass
class LayerCache:
    x: np.ndarray  # the layer's input: [T, B, I + 1] floats with a column of ones, or [T, B] token ids
    W_ih: list[np.ndarray]  # [G * H, I] per direction, as in the parameters (for dx)
    cells: list[Any]  # one cell cache per direction
    mask: np.ndarray | None  # dropout mask applied to this layer's output, [T, B, D * H]
    runners: list[Any] | None = None  # per direction: what ran the recurrence (the cell, or a SteppedCell)
    in_mask: np.ndarray | None = None  # variational mask on the float input [B, I], or per one-hot token [T, B]
    out_mask: np.ndarray | None = None  # variational mask on the output [B, D * H]


@dataclass
class StackCache:
    layers: list[LayerCache]
    batch_sizes: np.ndarray | None


def with_ones_column(x: np.ndarray, dtype: np.dtype) -> np.ndarray:
    """x̃ = [x, 1]: [T, B, I] -> [T, B, I + 1] of ``dtype``, so that a bias rides in the GEMM."""
    out = memory.empty((*x.shape[:-1], x.shape[-1] + 1), dtype)
    out[..., :-1] = x
    out[..., -1] = 1
    return out


class RecurrentStack:
    """``num_layers`` x ``num_directions`` cells over parameters held in a dict under torch's names.

    ``params`` and ``grads`` are the network's dicts (looked up at every call, so arrays may be replaced);
    names are ``{prefix}weight_ih_l{k}[_reverse]`` etc. as in nn.RNN/LSTM/GRU.
    """

    def __init__(
        self,
        cell: str | Cell,
        hidden_size: int,
        num_layers: int,
        bidirectional: bool,
        params: dict[str, np.ndarray],
        grads: dict[str, np.ndarray],
        rng: np.random.Generator,
        dropout: float = 0.0,
        nonlinearity: str = "tanh",
        prefix: str = "rnn.",
        variant: str = "standard",
    ):
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}")
        # a Cell instance, or a registered name (and variant) with this hidden size and nonlinearity
        self.cell = cell if isinstance(cell, Cell) else cell_class(cell, variant)(hidden_size, nonlinearity)
        self.n_states = len(self.cell.states)  # h first, then the cell's others (the LSTM's c, ...), each [B, H]
        self.extra_names = self.cell.extra_parameters
        self.hidden_size = hidden_size
        self.num_layers = num_layers
        self.num_directions = 2 if bidirectional else 1
        self.params = params
        self.grads = grads
        self.rng = rng
        self.dropout = dropout
        # Set to an array [num_layers * num_directions, T] to record ||dL/dh_t|| per layer/direction and step
        # during the next backward passes (rnnlab.analysis); None costs nothing.
        self.dh_norms: np.ndarray | None = None
        self.nonlinearity = nonlinearity
        self.prefix = prefix

    def names(self, layer: int, direction: int) -> tuple[str, str, str, str]:
        sfx = f"l{layer}" + ("_reverse" if direction else "")
        p = self.prefix
        return f"{p}weight_ih_{sfx}", f"{p}weight_hh_{sfx}", f"{p}bias_ih_{sfx}", f"{p}bias_hh_{sfx}"

    def cell_arrays(self, arrays: dict[str, np.ndarray], layer: int, direction: int) -> dict[str, np.ndarray]:
        """One layer and direction's parameters (or gradients) by the cell's base names (``weight_hh``, ...)."""
        sfx = f"_l{layer}" + ("_reverse" if direction else "")
        base = ("weight_ih", "weight_hh", "bias_ih", "bias_hh", *self.extra_names)
        return {b: arrays[f"{self.prefix}{b}{sfx}"] for b in base}

    def input_matrix(self, layer: int, direction: int) -> np.ndarray:
        """[s ⊙ W_ih | s ⊙ (b_ih + folded b_hh)], [G*H, I + 1]: the input side as one matrix (see above)."""
        p = self.cell_arrays(self.params, layer, direction)
        W_ih = p["weight_ih"]
        s = self.cell.gate_scale(W_ih.dtype)
        M = memory.empty((W_ih.shape[0], W_ih.shape[1] + 1), W_ih.dtype)
        np.multiply(s[:, None], W_ih, out=M[:, :-1])
        np.multiply(s, self.cell.fold_bias(p), out=M[:, -1])
        return M

    # ------------------------------------------------------------------------------------------------ forward
    def forward(
        self,
        inputs: np.ndarray,
        states0: tuple[np.ndarray | None, ...] | None = None,
        batch_sizes: np.ndarray | None = None,
        train: bool = False,
        masks: list[LayerMasks] | None = None,
    ) -> tuple[np.ndarray, tuple[np.ndarray, ...], StackCache]:
        """inputs [T, B, I] (floats) or [T, B] (token ids, one-hot); states0 (h0, c0, ...): one [L * D, B, H] array
        or None (zeros) per state of the cell, or None (all zeros).

        ``masks``: per layer, the variational dropout and zoneout masks (rnnlab.models.regularisers), rows in this
        batch's order; a layer with a mask or zoneout inside the recurrence runs its cell step by step
        (rnnlab.models.numpy.stepped). Returns out [T, B, D * H] (zero at padded steps), the final states (h_n, c_n,
        ...) [L * D, B, H] each, and the cache.
        """
        L, D, H = self.num_layers, self.num_directions, self.hidden_size
        GH = self.cell.gates * H
        T, B = inputs.shape[:2]
        dtype = self.params[self.names(0, 0)[1]].dtype
        zeros = memory.zeros((B, H), dtype)
        states0 = (None,) * self.n_states if states0 is None else tuple(states0)
        finals = tuple(np.empty((L * D, B, H), dtype=dtype) for _ in range(self.n_states))
        x = inputs if np.issubdtype(inputs.dtype, np.integer) else with_ones_column(inputs, dtype)
        layers: list[LayerCache] = []
        out = x
        for layer in range(L):
            outs, cells, W_ihs, runners = [], [], [], []
            lm = None if masks is None else masks[layer]
            in_mask = None if lm is None else lm.input
            if in_mask is not None:
                if np.issubdtype(x.dtype, np.integer):  # one-hot: the mask's entry of each token, [T, B]
                    in_mask = in_mask[np.arange(B)[None, :], x]
                else:  # x̃ is this layer's own array: masked in place (the ones column stays)
                    x[..., :-1] *= in_mask
            for d in range(D):
                k = layer * D + d
                M = self.input_matrix(layer, d)
                Xp = memory.empty((T, B, GH), dtype)
                if np.issubdtype(x.dtype, np.integer) and in_mask is not None:  # (W^T)[x] ⊙ m + b
                    np.take(M[:, :-1].T, x, axis=0, out=Xp)
                    Xp *= in_mask[..., None]
                    Xp += M[:, -1]
                elif np.issubdtype(x.dtype, np.integer):  # one-hot: one_hot(x) W^T + b = (W^T + b)[x]
                    table = memory.copy(M[:, :-1].T)
                    table += M[:, -1]
                    np.take(table, x, axis=0, out=Xp)
                else:
                    np.matmul(x.reshape(T * B, -1), M.T, out=Xp.reshape(T * B, GH))
                state0 = tuple(zeros if s0 is None else s0[k] for s0 in states0)
                reverse = d == 1
                p = self.cell_arrays(self.params, layer, d)
                runner: Any = self.cell
                dm = None if lm is None else lm.directions[d]
                if dm is not None and (dm.state is not None or any(_zones(z) for z in dm.zone)):
                    runner = SteppedCell(self.cell, dm)
                S, final, cc = runner.forward(Xp, state0, p, batch_sizes, reverse)
                runners.append(runner)
                for s_n, s in zip(finals, final, strict=True):
                    s_n[k] = s
                outs.append(S[:T] if reverse else S[1:])
                cells.append(cc)
                W_ihs.append(self.params[self.names(layer, d)[0]])
            mask = None
            out_mask = None if lm is None else lm.output
            if layer == L - 1:
                out = self._top_output(outs, batch_sizes)
                if out_mask is not None:
                    out = out * out_mask  # (a new array: the top output may be a view of the states)
            else:  # the next layer's x̃, written in place: [out * mask, 1]
                out = memory.empty((T, B, D * H + 1), dtype)
                out[..., -1] = 1
                for d in range(D):
                    out[..., d * H : (d + 1) * H] = outs[d]
                if batch_sizes is not None:
                    for t, b in enumerate(batch_sizes):
                        out[t, b:, :-1] = 0
                if out_mask is not None:
                    out[..., :-1] *= out_mask
                if train and self.dropout > 0:
                    mask = self.rng.random(dtype=dtype, out=memory.empty((T, B, D * H), dtype))
                    keep = mask >= self.dropout
                    np.multiply(keep, np.asarray(1.0 / (1.0 - self.dropout), dtype=dtype), out=mask)
                    out[..., :-1] *= mask
            layers.append(LayerCache(x, W_ihs, cells, mask, runners, in_mask, out_mask))
            x = out
        return out, finals, StackCache(layers, batch_sizes)

    @staticmethod
    def _top_output(outs: list[np.ndarray], batch_sizes: np.ndarray | None) -> np.ndarray:
        """[forward ; reverse] on the feature axis, zero where a sequence has ended (as pad_packed_sequence)."""
        if len(outs) == 1 and batch_sizes is None:
            return outs[0]  # a view of the states: no copy
        T, B, H = outs[0].shape
        out = memory.empty((T, B, len(outs) * H), outs[0].dtype)
        for d, o in enumerate(outs):
            out[..., d * H : (d + 1) * H] = o
        if batch_sizes is not None:
            for t, b in enumerate(batch_sizes):
                out[t, b:] = 0
        return out

    # ----------------------------------------------------------------------------------------------- backward
    def backward(
        self,
        d_out: np.ndarray | None,
        d_finals: tuple[np.ndarray | None, ...] | None,
        cache: StackCache,
        need_dx: bool = True,
    ) -> tuple[np.ndarray | None, tuple[np.ndarray, ...]]:
        """d_out [T, B, D * H] (or None), d_finals (dh_n, dc_n, ...): one [L * D, B, H] array or None per state, or
        None -> dx, (dh0, dc0, ...).

        Accumulates every recurrent parameter's gradient into ``grads``. dx is the gradient of the float inputs
        [T, B, I] (None for token inputs or without ``need_dx``). The cache serves one backward.
        """
        L, D, H = self.num_layers, self.num_directions, self.hidden_size
        GH = self.cell.gates * H
        T, B = cache.layers[0].x.shape[:2]
        dtype = self.params[self.names(0, 0)[1]].dtype
        d_finals = (None,) * self.n_states if d_finals is None else tuple(d_finals)
        d_states0 = tuple(np.empty((L * D, B, H), dtype=dtype) for _ in range(self.n_states))
        d_y = d_out  # gradient of the current layer's output
        dx = None
        for layer in range(L - 1, -1, -1):
            lc = cache.layers[layer]
            if lc.out_mask is not None and d_y is not None:
                d_y = d_y * lc.out_mask
            one_hot = np.issubdtype(lc.x.dtype, np.integer)
            want_dx = layer > 0 or (need_dx and not one_hot)
            dx = None
            for d in range(D):
                k = layer * D + d
                n_ih, _, n_bih, n_bhh = self.names(layer, d)
                d_y_d = None if d_y is None else (d_y if D == 1 else d_y[..., d * H : (d + 1) * H])
                d_final = tuple(None if d_n is None else d_n[k] for d_n in d_finals)
                norms = None if self.dh_norms is None else self.dh_norms[k]
                g = self.cell_arrays(self.grads, layer, d)
                runner = self.cell if lc.runners is None else lc.runners[d]
                dA, d_state0 = runner.backward(d_y_d, d_final, lc.cells[d], g, dh_norms=norms)
                for d_s0, d_s in zip(d_states0, d_state0, strict=True):
                    d_s0[k] = d_s
                # the input side: [dW_ih | db_ih] = dA^T x̃, dx = dA W_ih
                dA2 = dA.reshape(T * B, GH)
                if one_hot:
                    dAm = dA2 if lc.in_mask is None else dA2 * lc.in_mask.reshape(T * B, 1)
                    self.grads[n_ih] += one_hot_projection_backward(dAm, lc.x, lc.W_ih[d].shape[1]).T
                    db = column_sum(dA2)
                else:
                    dM = np.matmul(dA2.T, lc.x.reshape(T * B, -1), out=memory.empty((GH, lc.x.shape[-1]), dtype))
                    self.grads[n_ih] += dM[:, :-1]
                    db = dM[:, -1]
                self.grads[n_bih] += db
                if self.cell.biases_summed:
                    self.grads[n_bhh] += db
                if want_dx:
                    dx_d = np.matmul(dA2, lc.W_ih[d], out=memory.empty((T * B, lc.W_ih[d].shape[1]), dtype))
                    dx_d = dx_d.reshape(T, B, -1)
                    dx = dx_d if dx is None else np.add(dx, dx_d, out=dx)
            if dx is not None and lc.in_mask is not None and not one_hot:
                dx *= lc.in_mask
            if layer > 0:
                if cache.layers[layer - 1].mask is not None:
                    dx *= cache.layers[layer - 1].mask
                d_y = dx
        return dx, d_states0
