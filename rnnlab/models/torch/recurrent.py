"""Embedding (or one-hot) -> the cell's torch module (fused nn.RNN / nn.LSTM / nn.GRU, or a reference module) -> linear
head, with weights from init.py."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from rnnlab.cells.protocol import cell_for
from rnnlab.models.init import init_parameters
from rnnlab.models.regularisers import DirectionMasks, LayerMasks, MaskSource, Regularisers
from rnnlab.models.spec import NetSpec

State = torch.Tensor | tuple[torch.Tensor, ...]  # h_n, or (h_n, c_n, ...) for a cell with several states


@torch.no_grad()
def copy_arrays_into(module: nn.Module, arrays: dict[str, np.ndarray]) -> None:
    """Copy named NumPy arrays into ``module``'s parameters (cast to their dtype); the names must match exactly."""
    params = dict(module.named_parameters())
    missing, extra = set(params) - set(arrays), set(arrays) - set(params)
    if missing or extra:
        raise KeyError(f"parameter names differ: missing {sorted(missing)}, unexpected {sorted(extra)}")
    for name, p in params.items():
        p.copy_(torch.from_numpy(np.asarray(arrays[name])).to(p.dtype))


class TorchRecurrentNet(nn.Module):
    """The torch backend's network. Inputs are token ids [B, T]; ``batch_first`` throughout."""

    def __init__(self, spec: NetSpec, seed: int):
        super().__init__()
        self.spec = spec
        self.embedding = (
            nn.Embedding(spec.vocab_size, spec.embed_dim, padding_idx=spec.padding_idx) if spec.has_embedding else None
        )
        # the cell's torch counterpart: torch's fused nn.RNN / nn.LSTM / nn.GRU, or a reference module; the
        # reference module whenever a mask acts inside the recurrence, which the fused kernels cannot apply
        dropout = spec.dropout if spec.num_layers > 1 else 0.0
        cell = cell_for(spec)
        regs = Regularisers.of(spec)
        self.masks = MaskSource(regs, seed) if regs.active else None
        self.state_names = cell.states
        if self.masks is not None:
            from rnnlab.models.torch.reference import ReferenceRecurrent

            self.rnn = ReferenceRecurrent(cell, spec.input_size, spec.num_layers, spec.bidirectional, dropout)
        else:
            self.rnn = cell.torch_module(spec.input_size, spec.num_layers, spec.bidirectional, dropout)
        self.head = nn.Linear(spec.features, spec.num_outputs)
        self.load_arrays(init_parameters(spec, seed))

    def load_arrays(self, arrays: dict[str, np.ndarray]) -> None:
        """Copy named NumPy arrays (torch layout) into the parameters; every parameter must be given."""
        copy_arrays_into(self, arrays)
        if hasattr(self.rnn, "flatten_parameters"):  # torch's fused modules (cuDNN wants one weight buffer)
            self.rnn.flatten_parameters()

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """Token ids [B, T] -> embeddings or one-hot vectors; float features [B, T, F] pass through."""
        if self.spec.input_features > 0:
            return x.to(self.head.weight.dtype)
        if self.embedding is not None:
            return self.embedding(x)
        return nn.functional.one_hot(x, self.spec.vocab_size).to(self.head.weight.dtype)

    def forward(
        self, x: torch.Tensor, lengths: torch.Tensor | None = None, state: State | None = None
    ) -> tuple[torch.Tensor, State]:
        """Recurrent outputs [B, T, H * num_directions] and the final state, torch-ordered.

        With ``lengths``, the batch is packed so that padding never enters the recurrence and the final state
        of each sequence is taken at its own last step (in both directions).
        """
        inputs = self.embed(x)
        extra = {} if self.masks is None else {"masks": self.draw_masks(inputs)}
        if lengths is None:
            return self.rnn(inputs, state, **extra)
        packed = pack_padded_sequence(inputs, lengths.cpu(), batch_first=True, enforce_sorted=False)
        out, final = self.rnn(packed, state, **extra)
        out, _ = pad_packed_sequence(out, batch_first=True, total_length=x.shape[1])
        return out, final

    def draw_masks(self, inputs: torch.Tensor) -> list[LayerMasks] | None:
        """The masks of this forward (rnnlab.models.regularisers: the NumPy backend's, drawn alike) as tensors."""
        spec, states = self.spec, self.state_names
        if not self.training:
            return self.masks.evaluation(spec.num_layers, spec.num_directions, states)
        B, T = inputs.shape[:2]
        sizes = [spec.input_size] + [spec.features] * (spec.num_layers - 1)
        drawn = self.masks.draw(sizes, spec.num_directions, spec.hidden_size, states, T, B, np.float64)

        def tensor(a: Any) -> Any:
            return torch.from_numpy(a).to(inputs.device, inputs.dtype) if isinstance(a, np.ndarray) else a

        return [
            LayerMasks(
                tensor(m.input),
                [DirectionMasks(tensor(d.state), tuple(tensor(z) for z in d.zone)) for d in m.directions],
                tensor(m.output),
            )
            for m in drawn
        ]

    def last_hidden(self, final: State) -> torch.Tensor:
        """The top layer's final hidden state, [B, H * num_directions] (forward then backward)."""
        h_n = final[0] if isinstance(final, tuple) else final
        top = h_n[-self.spec.num_directions :]  # [D, B, H]
        return torch.cat(list(top), dim=-1)
