"""Embedding (or one-hot) -> stacked, optionally bidirectional recurrent layers -> linear head, in NumPy.

The NumPy twin of ``rnnlab.models.torch.recurrent.TorchRecurrentNet``: the same parameters under the same names
and shapes (``params``, drawn by ``rnnlab.models.init``), the same inputs and outputs (batch-first token ids,
outputs [B, T, H * D], final states [L * D, B, H] ordered layer * D + direction: h_n, or a tuple (h_n, c_n, ...)
with one array per state of a cell with several, ``(h_n, c_n)`` for the LSTM),
and the same treatment of variable lengths as ``pack_padded_sequence(..., enforce_sorted=False)``. With float64
and no dropout the two compute the same numbers.

Forward returns a cache; backward takes the gradients of the outputs and of the final state, accumulates every
parameter's gradient into ``grads`` (same names and shapes) and returns the gradient of the initial state::

    out, final, cache = net.forward(x, lengths)                 # classify: top layer's final state -> head
    logits, head_cache = net.head_forward(net.last_hidden(final))
    loss, dlogits = cross_entropy(logits, y)
    net.backward(None, net.last_hidden_backward(net.head_backward(dlogits, head_cache)), cache)

``step`` is the batch-1, one-token path for generation: layer 0's input side is one row of a precomputed
[vocab, G * H] table, every array is allocated once, and each layer advances by its cell's ``step``.
The network knows its cell only through the cell protocol (rnnlab/cells/protocol.py).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from rnnlab.models.init import init_parameters
from rnnlab.models.numpy import memory
from rnnlab.models.numpy.layers import (
    LinearCache,
    embedding_backward,
    embedding_forward,
    linear_backward,
    linear_forward,
)
from rnnlab.models.numpy.params import NumpyParameters
from rnnlab.models.numpy.stack import RecurrentStack, StackCache
from rnnlab.models.regularisers import MaskSource, Regularisers, reorder
from rnnlab.models.spec import NetSpec

State = np.ndarray | tuple[np.ndarray, ...]  # h_n, or (h_n, c_n, ...) for a cell with several states (the LSTM's c)


@dataclass
class NetCache:
    stack: StackCache
    ids: np.ndarray | None  # [T, B] token ids, time-major, in the (sorted) order the stack saw; None for features
    order: np.ndarray | None  # batch order given to the stack (sorted by decreasing length), None if unchanged
    inverse: np.ndarray | None  # its inverse permutation


@dataclass
class _StepPlan:
    """Everything ``step`` needs, precomputed from the parameters, and its work arrays."""

    table: np.ndarray  # [V, G*H] layer 0's input side s ⊙ (W_ih e_v + biases) for every token v
    W_ihT: list[np.ndarray]  # layers >= 1: (s ⊙ W_ih)^T [H, G*H] (index 0 unused)
    bias: list[np.ndarray]  # layers >= 1: s ⊙ folded biases (index 0 unused)
    cells: list[Any]  # per layer: what the cell's ``step`` precomputed (``prepare_step``)
    head_WT: np.ndarray  # [H, C]
    head_b: np.ndarray
    states: list[np.ndarray]  # one [L, H] array per state of the cell (h, and c for an LSTM, ...)
    xp: np.ndarray  # [G*H]
    logits: np.ndarray  # [C]


class NumpyRecurrentNet(NumpyParameters):
    """The NumPy backend's network. Parameters and gradients are ``{torch name: array}`` dicts of ``dtype``."""

    def __init__(self, spec: NetSpec, seed: int, dtype: Any = np.float32):
        self.spec = spec
        self._dtype = np.dtype(dtype)
        if self._dtype not in (np.float32, np.float64):
            raise ValueError(f"dtype must be float32 or float64, got {self._dtype}")
        self.params: dict[str, np.ndarray] = {
            name: memory.copy(value, self._dtype) for name, value in init_parameters(spec, seed).items()
        }
        self.grads: dict[str, np.ndarray] = {
            name: memory.zeros(p.shape, self._dtype) for name, p in self.params.items()
        }
        self.rng = np.random.default_rng([seed, 1])  # dropout masks; its state is part of ``state_dict``
        self.stack = RecurrentStack(
            spec.cell,
            spec.hidden_size,
            spec.num_layers,
            spec.bidirectional,
            self.params,
            self.grads,
            self.rng,
            dropout=spec.dropout if spec.num_layers > 1 else 0.0,
            nonlinearity=spec.nonlinearity,
            variant=spec.variant,
        )
        self.n_states = self.stack.n_states
        # variational dropout and zoneout inside the recurrence: masks drawn as the torch backend draws them
        regs = Regularisers.of(spec)
        self.masks = MaskSource(regs, seed) if regs.active else None
        self._plan: _StepPlan | None = None

    def _parameters_changed(self) -> None:
        self._plan = None  # the generation step's precomputed matrices

    # ---------------------------------------------------------------------------------------------- forward
    def forward(
        self, x: np.ndarray, lengths: np.ndarray | None = None, state: State | None = None, train: bool = False
    ) -> tuple[np.ndarray, State, NetCache]:
        """Token ids x [B, T] -> outputs [B, T, H * D] (zero past each length), final state, cache.

        With ``lengths`` [B], sequence b only sees its first lengths[b] tokens, in both directions, and its
        final state is taken at its own last step (torch's packed sequences). ``train`` enables dropout.
        A network of float features (``spec.input_features`` > 0) takes x [B, T, F] (see ``forward_features``).
        """
        if self.spec.input_features > 0:
            return self.forward_features(np.asarray(x, dtype=self._dtype), lengths, state, train)
        ids = np.asarray(x)
        if ids.ndim != 2 or not np.issubdtype(ids.dtype, np.integer):
            raise ValueError(f"x must be [B, T] integer token ids, got {ids.dtype} {ids.shape}")
        B, T = ids.shape
        order, inverse, batch_sizes = self._packing(lengths, B, T)
        ids_tm = (ids if order is None else ids[order]).T  # [T, B]
        # [T, B, E] embeddings, or the ids themselves: the stack gathers one-hot inputs' projections
        inputs = embedding_forward(self.params["embedding.weight"], ids_tm) if self.spec.has_embedding else ids_tm
        return self._run(inputs, ids_tm, order, inverse, batch_sizes, state, train)

    def forward_features(
        self, x: np.ndarray, lengths: np.ndarray | None = None, state: State | None = None, train: bool = False
    ) -> tuple[np.ndarray, State, NetCache]:
        """As ``forward`` but from float inputs x [B, T, input_size], bypassing the embedding."""
        x = np.asarray(x)
        if x.ndim != 3 or x.shape[2] != self.spec.input_size:
            raise ValueError(f"x must be [B, T, {self.spec.input_size}], got {x.shape}")
        B, T = x.shape[:2]
        order, inverse, batch_sizes = self._packing(lengths, B, T)
        inputs = (x if order is None else x[order]).transpose(1, 0, 2)  # the stack copies it (time-major, dtype)
        return self._run(inputs, None, order, inverse, batch_sizes, state, train)

    def _run(
        self,
        inputs: np.ndarray,
        ids_tm: np.ndarray | None,
        order: np.ndarray | None,
        inverse: np.ndarray | None,
        batch_sizes: np.ndarray | None,
        state: State | None,
        train: bool,
    ) -> tuple[np.ndarray, State, NetCache]:
        self._plan = None  # parameters may have changed since the last step()
        states0 = self._split_state(state, inputs.shape[1], order)
        masks = None
        if self.masks is not None:
            spec, states = self.spec, self.stack.cell.states
            if train:
                sizes = [spec.input_size] + [spec.features] * (spec.num_layers - 1)
                T, B = inputs.shape[:2]
                masks = self.masks.draw(sizes, spec.num_directions, spec.hidden_size, states, T, B, self._dtype)
                masks = masks if order is None else reorder(masks, order)
            else:
                masks = self.masks.evaluation(spec.num_layers, spec.num_directions, states)
        out, finals, stack_cache = self.stack.forward(inputs, states0, batch_sizes, train, masks)
        if inverse is not None:
            out = out[:, inverse]
            finals = tuple(s_n[:, inverse] for s_n in finals)
        final: State = finals if self.n_states > 1 else finals[0]
        return out.transpose(1, 0, 2), final, NetCache(stack_cache, ids_tm, order, inverse)

    def _packing(self, lengths: Any, B: int, T: int) -> tuple[np.ndarray | None, np.ndarray | None, np.ndarray | None]:
        """(order, inverse, batch_sizes) as pack_padded_sequence(enforce_sorted=False) would sort the batch."""
        if lengths is None:
            return None, None, None
        lengths = np.asarray(lengths).reshape(-1).astype(np.int64)
        if lengths.shape[0] != B:
            raise ValueError(f"{lengths.shape[0]} lengths for a batch of {B}")
        if lengths.min() < 1 or lengths.max() > T:
            raise ValueError(f"lengths must be in [1, {T}], got {lengths.min()}..{lengths.max()}")
        order = np.argsort(-lengths, kind="stable")
        sorted_lengths = lengths[order]
        if np.array_equal(order, np.arange(B)):
            order, inverse = None, None
        else:
            inverse = np.argsort(order)
        if sorted_lengths[-1] == T:
            return order, inverse, None  # nothing is padded
        batch_sizes = np.count_nonzero(sorted_lengths[None, :] > np.arange(T)[:, None], axis=1)
        return order, inverse, batch_sizes

    def _split_state(self, state: State | None, B: int, order: np.ndarray | None) -> tuple[np.ndarray, ...] | None:
        """The initial states (h0, c0, ...) as the stack takes them, in its batch order; None: zeros."""
        if state is None:
            return None
        L, H = self.spec.num_layers * self.spec.num_directions, self.spec.hidden_size
        parts = state if isinstance(state, tuple) else (state,)
        names = self.stack.cell.states
        if len(parts) != self.n_states:
            listed = " and ".join([", ".join(names[:-1]), names[-1]] if len(names) > 1 else names)
            shape = f"a tuple ({', '.join(names)})" if self.n_states > 1 else "a single array"
            raise ValueError(f"the state of cell {self.spec.cell} is {listed}: {shape}")
        out = []
        for part in parts:
            part = np.asarray(part, dtype=self._dtype)
            if part.shape != (L, B, H):
                raise ValueError(f"state of shape {part.shape}, expected {(L, B, H)}")
            out.append(part if order is None else part[:, order])
        return tuple(out)

    # --------------------------------------------------------------------------------------------- backward
    def backward(self, d_out: np.ndarray | None, d_final: Any, cache: NetCache) -> State:
        """Gradients of the outputs [B, T, H * D] and of the final state (either may be None; with several states,
        a tuple (dh_n, dc_n, ...) with any of them None) -> gradient of the initial state, shaped like the state.

        Accumulates into ``grads``: every recurrent parameter, the embedding (row padding_idx excluded) or
        the one-hot input weights. The head's gradient comes from ``head_backward``.
        """
        dx, d_state0 = self._backward(d_out, d_final, cache, need_dx=cache.ids is not None)
        if cache.ids is not None and dx is not None:
            embedding_backward(dx, cache.ids, self.grads["embedding.weight"], self.spec.padding_idx)
        return d_state0

    def backward_features(self, d_out: np.ndarray | None, d_final: Any, cache: NetCache) -> tuple[np.ndarray, State]:
        """As ``backward`` for a ``forward_features`` cache; also returns the inputs' gradient [B, T, I]."""
        if cache.ids is not None:
            raise ValueError("this cache comes from forward() (token inputs): use backward()")
        dx, d_state0 = self._backward(d_out, d_final, cache, need_dx=True)
        if cache.inverse is not None:
            dx = dx[:, cache.inverse]
        return dx.transpose(1, 0, 2), d_state0

    def _backward(self, d_out: Any, d_final: Any, cache: NetCache, need_dx: bool) -> tuple[Any, State]:
        self._plan = None
        order = cache.order
        d_out_tm = None
        if d_out is not None:  # time-major and contiguous: the time loop reads one [B, H * D] block per step
            d_out_tm = np.asarray(d_out).transpose(1, 0, 2)
            d_out_tm = memory.copy(d_out_tm if order is None else d_out_tm[:, order], self._dtype)
        n = self.n_states
        parts = () if d_final is None else d_final if isinstance(d_final, tuple) else (d_final,)
        d_finals = tuple(None if d is None else self._sorted(d, order) for d in (*parts, *(None,) * n)[:n])
        dx, d_states0 = self.stack.backward(d_out_tm, d_finals, cache.stack, need_dx)
        if cache.inverse is not None:
            d_states0 = tuple(d0[:, cache.inverse] for d0 in d_states0)
        return dx, (d_states0 if n > 1 else d_states0[0])

    def _sorted(self, a: Any, order: np.ndarray | None) -> np.ndarray:
        a = np.asarray(a, dtype=self._dtype)
        return a if order is None else a[:, order]

    # ----------------------------------------------------------------------------------------- final states
    def last_hidden(self, final: State) -> np.ndarray:
        """The top layer's final hidden state, [B, H * D] (forward then backward)."""
        h_n = final[0] if isinstance(final, tuple) else final
        return np.concatenate(list(h_n[-self.spec.num_directions :]), axis=-1)

    def last_hidden_backward(self, d_feat: np.ndarray) -> State:
        """The gradient of the final state given that of ``last_hidden`` (zeros elsewhere; dc_n, ... None)."""
        D, H = self.spec.num_directions, self.spec.hidden_size
        d_feat = np.asarray(d_feat, dtype=self._dtype)
        dh_n = np.zeros((self.spec.num_layers * D, d_feat.shape[0], H), dtype=self._dtype)
        for d in range(D):
            dh_n[-D + d] = d_feat[:, d * H : (d + 1) * H]
        return (dh_n, *(None,) * (self.n_states - 1)) if self.n_states > 1 else dh_n

    # ------------------------------------------------------------------------------------------------- head
    def head_forward(self, h: np.ndarray) -> tuple[np.ndarray, LinearCache]:
        """logits = h W^T + b over the last axis: [..., H * D] -> [..., num_outputs]."""
        return linear_forward(np.asarray(h, dtype=self._dtype), self.params["head.weight"], self.params["head.bias"])

    def head_backward(self, dlogits: np.ndarray, cache: LinearCache) -> np.ndarray:
        """Accumulates the head's gradients; returns the gradient of its input."""
        dlogits = np.asarray(dlogits, dtype=self._dtype)
        return linear_backward(
            dlogits, cache, self.params["head.weight"], self.grads["head.weight"], self.grads["head.bias"]
        )

    # ------------------------------------------------------------------------------------------- generation
    def forward_logits_last(self, ids: Any, state: State | None = None) -> tuple[np.ndarray, State]:
        """Run a prompt (a sequence of token ids, batch 1): the last position's logits [C] and the final state."""
        x = np.asarray(ids, dtype=np.int64).reshape(1, -1)
        out, final, _ = self.forward(x, state=state)
        logits, _ = self.head_forward(out[:, -1])
        return logits[0], final

    def step(self, token: int, state: State | None = None) -> tuple[np.ndarray, State]:
        """One token, batch 1, evaluation mode: (logits [C], new state shaped [L, 1, H] like ``forward``'s).

        The precomputed plan is rebuilt after any forward, backward or load, and whenever ``state`` is None.
        """
        if self.spec.bidirectional:
            raise ValueError("step() runs forward in time only; a bidirectional network needs the whole sequence")
        if self.spec.input_features > 0:
            raise ValueError("step() takes a token id; a network of float features runs forward() instead")
        if self._plan is None or state is None:
            self._plan = self._build_plan()
        plan = self._plan
        L, H = self.spec.num_layers, self.spec.hidden_size
        if state is None:
            for part in plan.states:
                part.fill(0)
        else:
            for part, given in zip(plan.states, state if self.n_states > 1 else (state,), strict=True):
                np.copyto(part, np.reshape(given, (L, H)))
        cell, xp = self.stack.cell, plan.xp
        zone = self.masks.regs.zone_rates(cell.states) if self.masks is not None else ()
        for layer in range(L):
            if layer == 0:
                x_side = plan.table[token]
            else:
                np.matmul(plan.states[0][layer - 1], plan.W_ihT[layer], out=xp)
                xp += plan.bias[layer]
                x_side = xp
            prev = [part[layer].copy() for part in plan.states] if any(zone) else None
            cell.step(x_side, [part[layer] for part in plan.states], plan.cells[layer])
            if prev is not None:  # zoneout in evaluation: s_t = p s_{t-1} + (1 - p) s̃_t
                for part, before, p in zip(plan.states, prev, zone, strict=True):
                    part[layer] *= 1 - p
                    part[layer] += p * before
        np.matmul(plan.states[0][L - 1], plan.head_WT, out=plan.logits)
        plan.logits += plan.head_b
        new = tuple(part.reshape(L, 1, H).copy() for part in plan.states)
        return plan.logits.copy(), (new if self.n_states > 1 else new[0])

    def _build_plan(self) -> _StepPlan:
        spec, p, dtype = self.spec, self.params, self._dtype
        H, L = spec.hidden_size, spec.num_layers
        cell = self.stack.cell
        GH = cell.gates * H
        s = cell.gate_scale(dtype)
        W_ihT, bias, cells = [], [], []
        table = np.empty(0, dtype=dtype)
        for layer in range(L):
            q = self.stack.cell_arrays(p, layer, 0)
            b = s * cell.fold_bias(q)
            W_ih_sT = memory.copy((s[:, None] * q["weight_ih"]).T)
            if layer == 0:
                table = memory.copy(p["embedding.weight"] @ W_ih_sT if spec.has_embedding else W_ih_sT)
                table += b
            W_ihT.append(W_ih_sT)
            bias.append(memory.copy(b))
            cells.append(cell.prepare_step(q))
        return _StepPlan(
            table=table,
            W_ihT=W_ihT,
            bias=bias,
            cells=cells,
            head_WT=memory.copy(p["head.weight"].T),
            head_b=memory.copy(p["head.bias"]),
            states=[memory.zeros((L, H), dtype) for _ in cell.states],
            xp=memory.empty(GH, dtype),
            logits=memory.empty(spec.num_outputs, dtype),
        )
