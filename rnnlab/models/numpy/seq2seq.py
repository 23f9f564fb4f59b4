"""Encoder-decoder with optional attention (task=seq2seq): the NumPy network (hand-written forward and backward).
Its description and initializer are in rnnlab.models.seq2seq_spec, the decoding both backends share in
rnnlab.models.decoding.

Network (Luong et al., 2015, with Bahdanau's additive score as an option)::

    encoder:  h_1..h_S = RNN_enc(E_src x_1..x_S)        stacked, optionally bidirectional; h_j [F], F = H * D
    bridge:   s_0^(l) = h_n^(l)                          unidirectional encoder
              s_0^(l) = W_b [h_n^(l,fwd); h_n^(l,bwd)] + b_b   bidirectional (likewise every further state of the
                                                               cell, c_0^(l) for the LSTM, each with its own W, b)
    decoder:  s_t = RNN_dec([E_tgt y_{t-1}; h~_{t-1}], s_{t-1})   (input feeding; h~_0 = 0; no h~ without attention)
    attention (model.attention = additive | dot, see attention.py):
              a_t = softmax_j(score(s_t, h_j)) over the source positions j < length,  c_t = sum_j a_tj h_j,
              h~_t = tanh(W_c [c_t; s_t])
    output:   logits_t = W_o o_t + b_o,   o_t = h~_t with attention, s_t without

s_t is the top decoder layer's state. The decoder has the encoder's cell, hidden size and number of layers.

Teacher forcing: the input token at step t >= 1 is the gold y_{t-1} where ``teacher[b, t]`` is true, and the
argmax of the network's own logits at step t - 1 otherwise (no gradient flows through the argmax). The task draws
``teacher`` from a NumPy generator, so both backends make the same choices.

Parameters are a ``{torch name: array}`` dict in the torch model's names and layouts (rnnlab.models.torch.seq2seq).
``init_seq2seq_parameters`` draws them all from one seeded NumPy generator (rnnlab.models.init's style).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from rnnlab.models.numpy import attention as att
from rnnlab.models.numpy import memory
from rnnlab.models.numpy.layers import embedding_backward, embedding_forward
from rnnlab.models.numpy.params import NumpyParameters
from rnnlab.models.numpy.stack import RecurrentStack, StackCache
from rnnlab.models.seq2seq_spec import Seq2SeqSpec, check_spec, init_seq2seq_parameters


def packing(lengths: Any, B: int, T: int) -> tuple[np.ndarray | None, np.ndarray | None, np.ndarray | None]:
    """(order, inverse, batch_sizes) as pack_padded_sequence(enforce_sorted=False) sorts a batch (see net.py)."""
    lengths = np.asarray(lengths).reshape(-1).astype(np.int64)
    if lengths.shape[0] != B:
        raise ValueError(f"{lengths.shape[0]} lengths for a batch of {B}")
    if lengths.min() < 1 or lengths.max() > T:
        raise ValueError(f"lengths must be in [1, {T}], got {lengths.min()}..{lengths.max()}")
    order = np.argsort(-lengths, kind="stable")
    inverse = np.argsort(order)
    if np.array_equal(order, np.arange(B)):
        order, inverse = None, None
    sorted_lengths = np.sort(lengths)[::-1]
    if sorted_lengths[-1] == T:
        return order, inverse, None
    return order, inverse, np.count_nonzero(sorted_lengths[None, :] > np.arange(T)[:, None], axis=1)


# ------------------------------------------------------------------------------------------------ NumPy network
@dataclass
class _Encoded:
    values: np.ndarray  # encoder outputs [B, S, F] (zero past each length)
    keys: np.ndarray  # [B, S, H]: W_h h_j, or h_j itself (dot attention, F == H); values when no attention
    mask: np.ndarray  # [B, S] bool, True at j < length
    states0: tuple[np.ndarray, ...]  # decoder initial states (h0, c0, ...), [L, B, H] each
    cache: Any  # what backward needs (None when decoding)


@dataclass
class _StepCache:
    tokens: np.ndarray  # [B] input tokens
    stack: StackCache
    attention: att.AttentionCache | None
    combine: att.CombineCache | None


@dataclass
class Seq2SeqCache:
    encoder: StackCache
    src_tm: np.ndarray  # [S, B] source ids, time-major, in the encoder's (sorted) order
    order: np.ndarray | None
    inverse: np.ndarray | None
    values: np.ndarray
    bridge_in: list[np.ndarray]  # bidirectional: [h_fwd; h_bwd] per layer, [L, B, 2H] (and c, ...) for the bridges
    steps: list[_StepCache] | None = None  # the step-by-step decoder
    whole: tuple[StackCache, np.ndarray] | None = None  # the one-call decoder (no attention, all steps forced)
    outputs: np.ndarray | None = None  # o_t [B, T, H], the output layer's input


class NumpySeq2Seq(NumpyParameters):
    """The NumPy backend's encoder-decoder; ``params`` / ``grads`` are ``{torch name: array}`` dicts of ``dtype``.

    ``forward(src, src_len, tgt_in, teacher)`` -> logits [B, T, Vt] and a cache; ``backward(dlogits, cache)``
    accumulates every gradient. ``start`` / ``step`` / ``select`` serve greedy and beam search.
    """

    def __init__(self, spec: Seq2SeqSpec, seed: int, dtype: Any = np.float32):
        check_spec(spec)
        self.spec = spec
        self._dtype = np.dtype(dtype)
        if self._dtype not in (np.float32, np.float64):
            raise ValueError(f"dtype must be float32 or float64, got {self._dtype}")
        self.params = {k: memory.copy(v, self._dtype) for k, v in init_seq2seq_parameters(spec, seed).items()}
        self.grads = {k: memory.zeros(v.shape, self._dtype) for k, v in self.params.items()}
        self.rng = np.random.default_rng([seed, 1])  # dropout masks; part of ``state_dict``
        common = dict(params=self.params, grads=self.grads, rng=self.rng, nonlinearity=spec.nonlinearity,
                      dropout=spec.dropout if spec.num_layers > 1 else 0.0, variant=spec.variant)  # fmt: skip
        self.encoder = RecurrentStack(spec.cell, spec.hidden_size, spec.num_layers, spec.bidirectional,
                                      prefix="encoder.", **common)  # fmt: skip
        self.decoder = RecurrentStack(spec.cell, spec.hidden_size, spec.num_layers, False, prefix="decoder.", **common)

    # ------------------------------------------------------------------------------------------------- encoder
    def _encode(self, src: np.ndarray, src_len: np.ndarray, train: bool) -> tuple[_Encoded, Seq2SeqCache]:
        spec, p = self.spec, self.params
        ids = np.asarray(src)
        lengths = np.asarray(src_len).reshape(-1).astype(np.int64)
        B, S = ids.shape
        order, inverse, batch_sizes = packing(lengths, B, S)
        src_tm = np.ascontiguousarray((ids if order is None else ids[order]).T)
        emb = embedding_forward(p["src_embedding.weight"], src_tm)  # [S, B, E]
        out, finals, stack_cache = self.encoder.forward(emb, None, batch_sizes, train)
        if inverse is not None:
            out = out[:, inverse]
            finals = tuple(s_n[:, inverse] for s_n in finals)
        values = np.ascontiguousarray(out.transpose(1, 0, 2))  # [B, S, F]
        mask = np.arange(S)[None, :] < lengths[:, None]
        keys = values @ p["attention.key.weight"].T if spec.has_key_projection else values
        bridge_in: list[np.ndarray] = []
        states0 = finals
        if spec.bidirectional:  # one bridge per state: h, then c for the LSTM, ...
            states0 = ()
            for part, s_n in zip(self.encoder.cell.states, finals, strict=True):
                s_in = np.concatenate([s_n[0::2], s_n[1::2]], axis=-1)  # [L, B, 2H]
                states0 += (s_in @ p[f"bridge_{part}.weight"].T + p[f"bridge_{part}.bias"],)
                bridge_in.append(s_in)
        cache = Seq2SeqCache(stack_cache, src_tm, order, inverse, values, bridge_in)
        return _Encoded(values, keys, mask, states0, cache), cache

    # ------------------------------------------------------------------------------------- one decoder step
    def _attend(self, enc: _Encoded, s: np.ndarray) -> tuple[np.ndarray, Any, Any, np.ndarray]:
        """(h~, attention cache, combine cache, weights) for the top decoder states s [B, H]."""
        p = self.params
        if self.spec.attention == "additive":
            v = p["attention.v.weight"][0]
            context, weights, a_cache = att.additive_forward(s, enc.keys, enc.values, enc.mask,
                                                             p["attention.query.weight"], v)  # fmt: skip
        else:
            context, weights, a_cache = att.dot_forward(s, enc.keys, enc.values, enc.mask)
        h_tilde, c_cache = att.combine_forward(context, s, p["attention.combine.weight"])
        return h_tilde, a_cache, c_cache, weights

    def _step(
        self,
        enc: _Encoded,
        tokens: np.ndarray,
        states: tuple[np.ndarray, ...],
        feed: np.ndarray | None,
        train: bool,
    ) -> tuple[np.ndarray, tuple[np.ndarray, ...], np.ndarray | None, _StepCache, np.ndarray | None]:
        """(o_t [B, H], the states (h, c, ...), h~ (the next feed), cache, attention weights) for input tokens [B]."""
        e = embedding_forward(self.params["tgt_embedding.weight"], tokens)  # [B, E]
        x = np.concatenate([e, feed], axis=-1) if self.spec.has_attention else e
        out, states, stack_cache = self.decoder.forward(x[None], states, None, train)
        s = out[0]
        if not self.spec.has_attention:
            return s, states, None, _StepCache(tokens, stack_cache, None, None), None
        h_tilde, a_cache, c_cache, weights = self._attend(enc, s)
        return h_tilde, states, h_tilde, _StepCache(tokens, stack_cache, a_cache, c_cache), weights

    # ------------------------------------------------------------------------------------------------ training
    def forward(
        self, src: Any, src_len: Any, tgt_in: Any, teacher: np.ndarray | None = None, train: bool = False
    ) -> tuple[np.ndarray, Seq2SeqCache]:
        """src [B, S] ids, src_len [B], tgt_in [B, T] decoder inputs (<sos> y_1 .. y_{T-1}), teacher [B, T] bool
        (None: always the gold token) -> logits [B, T, Vt], cache. ``train`` enables dropout."""
        spec, p = self.spec, self.params
        tgt_in = np.asarray(tgt_in)
        B, T = tgt_in.shape
        enc, cache = self._encode(src, src_len, train)
        forced = teacher is None or bool(np.asarray(teacher)[:, 1:].all())
        if not spec.has_attention and forced:  # the whole target sequence in one call of the stack
            emb = embedding_forward(p["tgt_embedding.weight"], np.ascontiguousarray(tgt_in.T))  # [T, B, E]
            out, _, dec_cache = self.decoder.forward(emb, enc.states0, None, train)
            outputs = np.ascontiguousarray(out.transpose(1, 0, 2))
            cache.whole = (dec_cache, np.ascontiguousarray(tgt_in.T))
        else:
            outputs = memory.empty((B, T, spec.hidden_size), self._dtype)
            states = enc.states0
            feed = np.zeros((B, spec.hidden_size), dtype=self._dtype) if spec.has_attention else None
            steps = []
            tokens = tgt_in[:, 0]
            W_o, b_o = p["output.weight"], p["output.bias"]
            for t in range(T):
                if t > 0:
                    gold = tgt_in[:, t]
                    if forced:
                        tokens = gold
                    else:  # the previous step's prediction where the draw says so
                        predicted = np.argmax(outputs[:, t - 1] @ W_o.T + b_o, axis=1)
                        tokens = np.where(np.asarray(teacher)[:, t], gold, predicted)
                o, states, feed, step_cache, _ = self._step(enc, tokens, states, feed, train)
                outputs[:, t] = o
                steps.append(step_cache)
            cache.steps = steps
        cache.outputs = outputs
        logits = outputs @ p["output.weight"].T + p["output.bias"]
        return logits, cache

    def backward(self, dlogits: np.ndarray, cache: Seq2SeqCache) -> None:
        """Gradient of the logits [B, T, Vt] -> every parameter's gradient, accumulated into ``grads``."""
        spec, p, g = self.spec, self.params, self.grads
        dlogits = np.asarray(dlogits, dtype=self._dtype)
        B, T, V = dlogits.shape
        H = spec.hidden_size
        d2 = dlogits.reshape(B * T, V)
        g["output.weight"] += d2.T @ cache.outputs.reshape(B * T, H)
        g["output.bias"] += d2.sum(axis=0)
        d_outputs = (d2 @ p["output.weight"]).reshape(B, T, H)
        d_values = None
        if cache.whole is not None:
            dec_cache, tgt_tm = cache.whole
            d_out_tm = memory.copy(d_outputs.transpose(1, 0, 2), self._dtype)
            dx, d_states = self.decoder.backward(d_out_tm, None, dec_cache, need_dx=True)
            embedding_backward(dx, tgt_tm, g["tgt_embedding.weight"], spec.pad_id)
        else:
            d_states = None
            d_feed = None
            E = spec.embed_dim
            if spec.has_attention:
                d_values = np.zeros_like(cache.values)
                d_keys = np.zeros((B, cache.values.shape[1], H if spec.has_key_projection else spec.features),
                                  dtype=self._dtype)  # fmt: skip
            for t in range(T - 1, -1, -1):
                step = cache.steps[t]
                d_o = d_outputs[:, t]
                if spec.has_attention:
                    if d_feed is not None:
                        d_o = d_o + d_feed
                    d_context, ds = att.combine_backward(d_o, step.combine, p["attention.combine.weight"],
                                                         g["attention.combine.weight"])  # fmt: skip
                    if spec.attention == "additive":
                        ds_att, dk, dvals = att.additive_backward(
                            d_context,
                            step.attention,
                            p["attention.query.weight"],
                            p["attention.v.weight"][0],
                            g["attention.query.weight"],
                            g["attention.v.weight"][0],
                        )
                    else:
                        ds_att, dk, dvals = att.dot_backward(d_context, step.attention)
                    ds = ds + ds_att
                    d_keys += dk
                    d_values += dvals
                else:
                    ds = d_o
                dx, d_states = self.decoder.backward(memory.copy(ds[None], self._dtype), d_states, step.stack,
                                                     need_dx=True)  # fmt: skip
                dx = dx[0]
                embedding_backward(dx[:, :E], step.tokens, g["tgt_embedding.weight"], spec.pad_id)
                d_feed = dx[:, E:] if spec.has_attention else None
            if spec.has_attention:
                if spec.has_key_projection:
                    F = spec.features
                    g["attention.key.weight"] += d_keys.reshape(-1, H).T @ cache.values.reshape(-1, F)
                    d_values += d_keys @ p["attention.key.weight"]
                else:
                    d_values += d_keys
        # the bridge: the decoder's initial state from the encoder's final state
        d_finals = d_states
        if spec.bidirectional:
            parts = zip(self.encoder.cell.states, d_states, cache.bridge_in, strict=True)
            d_finals = tuple(self._bridge_backward(part, d, s_in) for part, d, s_in in parts)
        order = cache.order
        if order is not None:
            d_finals = tuple(d[:, order] for d in d_finals)
        d_out_tm = None
        if d_values is not None:
            d_out_tm = d_values.transpose(1, 0, 2)
            d_out_tm = memory.copy(d_out_tm if order is None else d_out_tm[:, order], self._dtype)
        dx, _ = self.encoder.backward(d_out_tm, tuple(memory.copy(d, self._dtype) for d in d_finals), cache.encoder,
                                      need_dx=True)  # fmt: skip
        embedding_backward(dx, cache.src_tm, g["src_embedding.weight"], spec.pad_id)

    def _bridge_backward(self, part: str, d_out: np.ndarray, bridge_in: np.ndarray) -> np.ndarray:
        """x_l = [s_fwd; s_bwd] per layer, y_l = W x_l + b (s: the state ``part``): accumulate dW, db; return
        d s_n [L * 2, B, H]."""
        L, B, H = d_out.shape
        W = self.params[f"bridge_{part}.weight"]
        self.grads[f"bridge_{part}.weight"] += d_out.reshape(L * B, H).T @ bridge_in.reshape(L * B, 2 * H)
        self.grads[f"bridge_{part}.bias"] += d_out.reshape(L * B, H).sum(axis=0)
        dx = d_out @ W  # [L, B, 2H]
        d_final = np.empty((2 * L, B, H), dtype=self._dtype)
        d_final[0::2] = dx[..., :H]
        d_final[1::2] = dx[..., H:]
        return d_final

    # ------------------------------------------------------------------------------------------------ decoding
    def start(self, src: Any, src_len: Any) -> tuple[_Encoded, tuple[Any, ...]]:
        enc, _ = self._encode(src, src_len, train=False)
        enc.cache = None
        B = enc.values.shape[0]
        feed = np.zeros((B, self.spec.hidden_size), dtype=self._dtype) if self.spec.has_attention else None
        return enc, (enc.states0, feed)

    def step(
        self, memory_: _Encoded, state: tuple[Any, ...], tokens: np.ndarray
    ) -> tuple[np.ndarray, tuple[Any, ...], np.ndarray | None]:
        states, feed = state
        o, states, feed, _, weights = self._step(memory_, np.asarray(tokens, dtype=np.int64), states, feed, False)
        logits = (o @ self.params["output.weight"].T + self.params["output.bias"]).astype(np.float64)
        return log_softmax(logits), (states, feed), weights

    def select(self, memory_: _Encoded, state: tuple[Any, ...], index: np.ndarray) -> tuple[_Encoded, tuple]:
        states, feed = state
        enc = _Encoded(memory_.values[index], memory_.keys[index], memory_.mask[index], memory_.states0, None)
        return enc, (tuple(s[:, index] for s in states), None if feed is None else feed[index])


def log_softmax(logits: np.ndarray) -> np.ndarray:
    """log softmax over the last axis (shifted by the row maximum)."""
    z = logits - logits.max(axis=-1, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=-1, keepdims=True))
