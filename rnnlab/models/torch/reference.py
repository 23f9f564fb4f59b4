"""A stack of any registered cell in torch, for cells that torch has no fused module for (rnnlab/cells/protocol.py).

``ReferenceRecurrent(cell, input_size, num_layers, bidirectional, dropout)`` behaves as nn.LSTM / nn.GRU with
``batch_first=True`` from the outside: the same parameter names (``weight_ih_l{k}[_reverse]``, ..., then the cell's
extra parameters, in ``cell.parameter_shapes`` order), inputs [B, T, I] or a PackedSequence (the output is then
packed too), an initial state that is an [L * D, B, H] tensor or a tuple of them (h, c, ...), and outputs
(out [B, T, D * H], final state of the same structure). Each step is the cell's own ``torch_step``, written with
plain torch operations, so autograd differentiates it: this is the oracle a new NumPy cell is tested against.

Variable lengths as packed sequences: the forward direction stops at each sequence's last step (the state is
kept from there on, and the output is zero), the reverse direction starts there from the initial state.
Dropout (training only) is applied to every layer's output but the last, as in torch's modules.

``masks`` (per layer, from ``rnnlab.models.regularisers``, as tensors) add variational dropout on each layer's
input, on h_{t-1} where the cell reads it and on each layer's output, and zoneout on every state, exactly as the
NumPy backend's ``rnnlab.models.numpy.stepped`` does with the same masks.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torch.nn.utils.rnn import PackedSequence, pack_padded_sequence, pad_packed_sequence


class ReferenceRecurrent(nn.Module):
    def __init__(self, cell: Any, input_size: int, num_layers: int, bidirectional: bool, dropout: float = 0.0):
        super().__init__()
        self.cell = cell
        self.hidden_size = cell.hidden_size
        self.num_layers = num_layers
        self.num_directions = 2 if bidirectional else 1
        self.dropout = float(dropout)
        self.base_names: list[str] = []
        for layer in range(num_layers):
            in_size = input_size if layer == 0 else self.hidden_size * self.num_directions
            for d in range(self.num_directions):
                for base, shape in cell.parameter_shapes(in_size):
                    name = f"{base}_l{layer}" + ("_reverse" if d else "")
                    self.register_parameter(name, nn.Parameter(torch.empty(shape)))
                    if layer == 0 and d == 0:
                        self.base_names.append(base)

    def layer_params(self, layer: int, direction: int) -> dict[str, torch.Tensor]:
        sfx = f"_l{layer}" + ("_reverse" if direction else "")
        return {base: getattr(self, f"{base}{sfx}") for base in self.base_names}

    def forward(self, x: Any, hx: Any = None, masks: Any = None) -> tuple[Any, Any]:
        packed = isinstance(x, PackedSequence)
        if packed:
            inputs, lengths = pad_packed_sequence(x, batch_first=True)
        else:
            inputs, lengths = x, None
        B, T = inputs.shape[:2]
        L, D, H = self.num_layers, self.num_directions, self.hidden_size
        n_states = len(self.cell.states)
        if hx is None:
            zeros = inputs.new_zeros(L * D, B, H)
            hx = tuple(zeros for _ in range(n_states))
        elif not isinstance(hx, tuple):
            hx = (hx,)
        lengths_dev = None if lengths is None else lengths.to(inputs.device)
        finals: list[list[torch.Tensor]] = [[] for _ in range(n_states)]
        layer_in = inputs
        for layer in range(L):
            outs = []
            lm = None if masks is None else masks[layer]
            if lm is not None and lm.input is not None:
                layer_in = layer_in * lm.input[:, None, :]
            for d in range(D):
                k = layer * D + d
                p = self.layer_params(layer, d)
                # [B, G*H] per step: unbind's backward stacks the T step gradients once, where indexing x_side[:, t]
                # would add a zero-filled [B, T, G*H] gradient per step (T^2 B G H work, most of a step's time)
                x_side = (layer_in @ p["weight_ih"].T + p["bias_ih"]).unbind(1)
                state = tuple(h[k] for h in hx)
                steps: list[torch.Tensor] = [inputs.new_zeros(0)] * T
                dm = None if lm is None else lm.directions[d]
                for t in range(T - 1, -1, -1) if d else range(T):
                    read = state
                    if dm is not None and dm.state is not None:
                        read = (state[0] * dm.state, *state[1:])
                    new = self.cell.torch_step(x_side[t], read, p)
                    if dm is not None:  # zoneout: keep the previous value where z = 1 (or p in evaluation)
                        new = tuple(_zoneout(z, t, s, n) for z, s, n in zip(dm.zone, state, new, strict=True))
                    if lengths_dev is None:
                        state = tuple(new)
                        steps[t] = new[0]
                    else:
                        valid = (t < lengths_dev)[:, None]
                        state = tuple(torch.where(valid, n, s) for n, s in zip(new, state, strict=True))
                        steps[t] = torch.where(valid, new[0], torch.zeros_like(new[0]))
                outs.append(torch.stack(steps, dim=1))
                for i in range(n_states):
                    finals[i].append(state[i])
            layer_in = outs[0] if D == 1 else torch.cat(outs, dim=-1)
            if lm is not None and lm.output is not None:
                layer_in = layer_in * lm.output[:, None, :]
            if layer < L - 1 and self.dropout > 0 and self.training:
                layer_in = nn.functional.dropout(layer_in, self.dropout, training=True)
        final = tuple(torch.stack(f, dim=0) for f in finals)
        out: Any = layer_in
        if packed:
            out = pack_padded_sequence(out, lengths, batch_first=True, enforce_sorted=False)
        return out, (final if n_states > 1 else final[0])


def _zoneout(z: Any, t: int, prev: torch.Tensor, new: torch.Tensor) -> torch.Tensor:
    """z ⊙ prev + (1 - z) ⊙ new, z the step's [B, H] mask of a [T, B, H] tensor, or a rate (evaluation)."""
    if isinstance(z, torch.Tensor):
        z = z[t]
    elif z == 0:
        return new
    return z * prev + (1 - z) * new
