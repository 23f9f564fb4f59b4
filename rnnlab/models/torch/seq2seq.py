"""The torch backend's encoder-decoder (task=seq2seq): nn.Embedding, a packed nn.RNN/LSTM/GRU encoder, a decoder of
the same cell stepped one token at a time when attention (input feeding) or teacher forcing < 1 needs it, Luong's
attentional layer with an additive or dot score, and the output layer.

The equations are those of rnnlab.models.numpy.seq2seq (its module docstring), the parameter names and initial
weights those of rnnlab.models.seq2seq_spec, so that with float64 and no dropout the two backends compute the same
numbers.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from rnnlab.cells.protocol import cell_for
from rnnlab.models.seq2seq_spec import Seq2SeqSpec, check_spec, init_seq2seq_parameters
from rnnlab.models.torch.recurrent import copy_arrays_into

State = tuple[tuple[torch.Tensor, ...], torch.Tensor | None]  # ((h, c, ...) [L, B, H] each, feed or None)


def _recurrent(spec: Seq2SeqSpec, input_size: int, bidirectional: bool) -> nn.Module:
    """The cell's torch module (fused where torch has one), batch_first."""
    dropout = spec.dropout if spec.num_layers > 1 else 0.0
    return cell_for(spec).torch_module(input_size, spec.num_layers, bidirectional, dropout)


class Attention(nn.Module):
    """score(s, h_j): additive v^T tanh(W_s s + W_h h_j) or dot s^T h_j (s^T W_h h_j when F != H); masked softmax;
    context c = sum_j a_j h_j; attentional vector h~ = tanh(W_c [c; s])."""

    def __init__(self, spec: Seq2SeqSpec):
        super().__init__()
        H, F = spec.hidden_size, spec.features
        self.kind = spec.attention
        self.query = nn.Linear(H, H, bias=False) if self.kind == "additive" else None
        self.key = nn.Linear(F, H, bias=False) if spec.has_key_projection else None
        self.v = nn.Linear(H, 1, bias=False) if self.kind == "additive" else None
        self.combine = nn.Linear(F + H, H, bias=False)

    def keys(self, values: torch.Tensor) -> torch.Tensor:
        """The per-batch projection of the encoder outputs [B, S, F] (identity for dot attention with F == H)."""
        return self.key(values) if self.key is not None else values

    def forward(
        self, s: torch.Tensor, keys: torch.Tensor, values: torch.Tensor, mask: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """s [B, H] -> (h~ [B, H], weights [B, S])."""
        if self.kind == "additive":
            scores = self.v(torch.tanh(keys + self.query(s)[:, None, :]))[..., 0]
        else:
            scores = torch.bmm(keys, s[:, :, None])[..., 0]
        scores = scores.masked_fill(~mask, float("-inf"))
        weights = torch.softmax(scores, dim=-1)
        context = torch.bmm(weights[:, None, :], values)[:, 0]
        return torch.tanh(self.combine(torch.cat([context, s], dim=-1))), weights


class TorchSeq2Seq(nn.Module):
    """Inputs are batch-first: src [B, S] ids, src_len [B], decoder inputs [B, T] (<sos> y_1 ... y_{T-1})."""

    def __init__(self, spec: Seq2SeqSpec, seed: int):
        super().__init__()
        check_spec(spec)
        self.spec = spec
        H = spec.hidden_size
        self.src_embedding = nn.Embedding(spec.src_vocab_size, spec.embed_dim, padding_idx=spec.pad_id)
        self.encoder = _recurrent(spec, spec.embed_dim, spec.bidirectional)
        self.tgt_embedding = nn.Embedding(spec.tgt_vocab_size, spec.embed_dim, padding_idx=spec.pad_id)
        self.decoder = _recurrent(spec, spec.decoder_input_size, False)
        self.states = cell_for(spec).states  # h, then c for an LSTM, ...: one bridge each (bridge_h, bridge_c, ...)
        for part in self.states:
            setattr(self, f"bridge_{part}", nn.Linear(2 * H, H) if spec.bidirectional else None)
        self.attention = Attention(spec) if spec.has_attention else None
        self.output = nn.Linear(H, spec.tgt_vocab_size)
        self.load_arrays(init_seq2seq_parameters(spec, seed))

    def load_arrays(self, arrays: dict[str, np.ndarray]) -> None:
        """Copy named NumPy arrays (torch layout) into the parameters; every parameter must be given."""
        copy_arrays_into(self, arrays)
        for module in (self.encoder, self.decoder):
            if hasattr(module, "flatten_parameters"):  # torch's fused modules (cuDNN wants one weight buffer)
                module.flatten_parameters()

    # ------------------------------------------------------------------------------------------------- encoder
    def encode(self, src: torch.Tensor, src_len: torch.Tensor) -> tuple[dict[str, torch.Tensor], State]:
        """(memory: values [B, S, F], keys, mask [B, S]; the decoder's initial state with a zero feed)."""
        S = src.shape[1]
        packed = pack_padded_sequence(self.src_embedding(src), src_len.cpu(), batch_first=True, enforce_sorted=False)
        out, final = self.encoder(packed)
        values, _ = pad_packed_sequence(out, batch_first=True, total_length=S)
        finals = final if isinstance(final, tuple) else (final,)
        if self.spec.bidirectional:  # [L * 2, B, H] -> [L, B, 2H] (forward; backward) -> linear bridge, per state
            finals = tuple(getattr(self, f"bridge_{part}")(torch.cat([s_n[0::2], s_n[1::2]], dim=-1))
                           for part, s_n in zip(self.states, finals, strict=True))  # fmt: skip
        mask = torch.arange(S, device=src.device)[None, :] < src_len.to(src.device)[:, None]
        keys = self.attention.keys(values) if self.attention is not None else values
        feed = values.new_zeros(src.shape[0], self.spec.hidden_size) if self.attention is not None else None
        return {"values": values, "keys": keys, "mask": mask}, (finals, feed)

    def _run_decoder(self, x: torch.Tensor, states: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, Any]:
        """The decoder from ``states`` (h, c, ...): outputs and the final states as a tuple."""
        out, final = self.decoder(x, states if len(states) > 1 else states[0])
        return out, (final if isinstance(final, tuple) else (final,))

    def step_outputs(self, memory: dict[str, torch.Tensor], state: State, tokens: torch.Tensor) -> tuple:
        """One decoder step: (o_t [B, H], new state, attention weights [B, S] or None)."""
        states, feed = state
        x = self.tgt_embedding(tokens)
        if feed is not None:
            x = torch.cat([x, feed], dim=-1)
        out, states = self._run_decoder(x[:, None, :], states)
        s = out[:, 0]
        if self.attention is None:
            return s, (states, None), None
        h_tilde, weights = self.attention(s, memory["keys"], memory["values"], memory["mask"])
        return h_tilde, (states, h_tilde), weights

    # ------------------------------------------------------------------------------------------------ training
    def forward(
        self, src: torch.Tensor, src_len: torch.Tensor, tgt_in: torch.Tensor, teacher: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Logits [B, T, Vt]. ``teacher`` [B, T] bool: where false (t >= 1), the step is fed the argmax of the
        previous step's logits instead of the gold token (None: always the gold token)."""
        memory, state = self.encode(src, src_len)
        forced = teacher is None or bool(teacher[:, 1:].all())
        if self.attention is None and forced:  # the whole target sequence in one call
            out, _ = self._run_decoder(self.tgt_embedding(tgt_in), state[0])
            return self.output(out)
        logits = []
        tokens = tgt_in[:, 0]
        for t in range(tgt_in.shape[1]):
            if t > 0:
                tokens = tgt_in[:, t] if forced else torch.where(teacher[:, t], tgt_in[:, t], logits[-1].argmax(-1))
            o, state, _ = self.step_outputs(memory, state, tokens)
            logits.append(self.output(o))
        return torch.stack(logits, dim=1)

    # ------------------------------------------------------------------------------------------------ decoding
    @torch.no_grad()
    def start(self, src: Any, src_len: Any) -> tuple[dict[str, torch.Tensor], State]:
        return self.encode(torch.as_tensor(src), torch.as_tensor(src_len))

    @torch.no_grad()
    def step(self, memory: dict[str, torch.Tensor], state: State, tokens: np.ndarray) -> tuple:
        device = memory["values"].device
        o, state, weights = self.step_outputs(memory, state, torch.as_tensor(tokens, device=device))
        log_probs = torch.log_softmax(self.output(o).double(), dim=-1).cpu().numpy()
        return log_probs, state, None if weights is None else weights.double().cpu().numpy()

    @torch.no_grad()
    def select(self, memory: dict[str, torch.Tensor], state: State, index: np.ndarray) -> tuple:
        idx = torch.as_tensor(index, device=memory["values"].device)
        states, feed = state
        memory = {k: v[idx] for k, v in memory.items()}
        return memory, (tuple(s[:, idx] for s in states), None if feed is None else feed[idx])
