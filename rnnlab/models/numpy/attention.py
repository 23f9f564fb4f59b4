"""Attention over the encoder outputs for one decoder step, forward and backward side by side (task=seq2seq).

Shapes: a batch of B decoder queries s [B, H] (the top decoder layer's state at this step), S source positions
with values h_j [B, S, F] (the encoder outputs, F = H * num_directions) and a validity mask [B, S] (False past a
source sequence's length).

Additive (Bahdanau et al., 2015), with attention size A:

    e_j = v^T tanh(W_s s + k_j),    k_j = W_h h_j     (k: the "keys", projected once per batch by the caller)

Dot (Luong et al., 2015):

    e_j = s^T k_j,                  k_j = h_j, or W_h h_j when F != H (a projection, so that the sizes agree)

Both then mask and normalise, and take the context and Luong's attentional vector:

    a = softmax(e) over the valid j (e_j = -inf where the mask is False, so a_j = 0 there)
    c = sum_j a_j h_j                                           [B, F]
    h~ = tanh(W_c [c; s])                                       [B, H]

Gradients (for one query row; the batch is a leading axis everywhere):

    softmax:   de_j = a_j (da_j - sum_k a_k da_k)               (zero at masked j, since a_j = 0)
    context:   da_j = h_j . dc,   dh_j = a_j dc
    additive:  du_j = de_j v ⊙ (1 - u_j²) with u_j = tanh(W_s s + k_j):  dk_j = du_j,  dW_s += (sum_j du_j) s^T,
               ds = W_s^T sum_j du_j,  dv += sum_j de_j u_j
    dot:       dk_j = de_j s,  ds = sum_j de_j k_j
    combine:   dz = dh~ ⊙ (1 - h~²),  dW_c += dz [c; s]^T,  [dc; ds] = W_c^T dz

Backward functions accumulate parameter gradients into arrays the caller owns (as layers.py) and return the
gradients of their inputs; the caller sums the keys' and values' gradients over the decoder steps and runs the
key projection's backward once.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class AttentionCache:
    query: np.ndarray  # s [B, H]
    values: np.ndarray  # h [B, S, F]
    weights: np.ndarray  # a [B, S]
    keys: np.ndarray | None  # dot: k [B, S, H]
    u: np.ndarray | None  # additive: tanh(W_s s + k_j) [B, S, A]


@dataclass
class CombineCache:
    inputs: np.ndarray  # [c; s] [B, F + H]
    out: np.ndarray  # h~ [B, H]
    context_size: int  # F


# ------------------------------------------------------------------------------------------------- softmax
def masked_softmax(scores: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """softmax over the last axis with e_j = -inf where ``mask`` is False; every row needs one valid entry."""
    e = np.where(mask, scores, -np.inf)
    e = e - e.max(axis=-1, keepdims=True)
    a = np.exp(e)
    a /= a.sum(axis=-1, keepdims=True)
    return a


def masked_softmax_backward(d_weights: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """de_j = a_j (da_j - sum_k a_k da_k); masked positions (a_j = 0) get zero."""
    return weights * (d_weights - np.sum(weights * d_weights, axis=-1, keepdims=True))


def _context(weights: np.ndarray, values: np.ndarray) -> np.ndarray:
    """c = sum_j a_j h_j, [B, S] x [B, S, F] -> [B, F]."""
    return np.matmul(weights[:, None, :], values)[:, 0]


def _context_backward(d_context: np.ndarray, cache: AttentionCache) -> tuple[np.ndarray, np.ndarray]:
    """(d_weights [B, S], d_values [B, S, F]) from dc [B, F]."""
    d_weights = np.matmul(cache.values, d_context[:, :, None])[:, :, 0]
    d_values = cache.weights[:, :, None] * d_context[:, None, :]
    return d_weights, d_values


# ------------------------------------------------------------------------------------------------ additive
def additive_forward(
    query: np.ndarray, keys: np.ndarray, values: np.ndarray, mask: np.ndarray, W_s: np.ndarray, v: np.ndarray
) -> tuple[np.ndarray, np.ndarray, AttentionCache]:
    """query s [B, H], keys k = W_h h [B, S, A], values h [B, S, F], mask [B, S], W_s [A, H], v [A]
    -> context c [B, F], weights a [B, S], cache."""
    q = query @ W_s.T  # [B, A]
    u = np.tanh(keys + q[:, None, :])  # [B, S, A]
    scores = u @ v  # [B, S]
    weights = masked_softmax(scores, mask)
    return _context(weights, values), weights, AttentionCache(query, values, weights, None, u)


def additive_backward(
    d_context: np.ndarray, cache: AttentionCache, W_s: np.ndarray, v: np.ndarray, dW_s: np.ndarray, dv: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """dc [B, F] -> (ds [B, H], dk [B, S, A], dh [B, S, F]); accumulates dW_s [A, H] and dv [A]."""
    d_weights, d_values = _context_backward(d_context, cache)
    d_scores = masked_softmax_backward(d_weights, cache.weights)  # [B, S]
    u = cache.u
    dv += np.einsum("bs,bsa->a", d_scores, u)
    d_pre = d_scores[:, :, None] * v * (1.0 - u * u)  # [B, S, A]: dL/d(W_s s + k_j)
    dq = d_pre.sum(axis=1)  # [B, A]
    dW_s += dq.T @ cache.query
    return dq @ W_s, d_pre, d_values


# ----------------------------------------------------------------------------------------------------- dot
def dot_forward(
    query: np.ndarray, keys: np.ndarray, values: np.ndarray, mask: np.ndarray
) -> tuple[np.ndarray, np.ndarray, AttentionCache]:
    """query s [B, H], keys k [B, S, H] (h itself or W_h h), values h [B, S, F], mask [B, S] -> c, a, cache."""
    scores = np.matmul(keys, query[:, :, None])[:, :, 0]  # [B, S]
    weights = masked_softmax(scores, mask)
    return _context(weights, values), weights, AttentionCache(query, values, weights, keys, None)


def dot_backward(d_context: np.ndarray, cache: AttentionCache) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """dc [B, F] -> (ds [B, H], dk [B, S, H], dh [B, S, F])."""
    d_weights, d_values = _context_backward(d_context, cache)
    d_scores = masked_softmax_backward(d_weights, cache.weights)
    d_query = np.matmul(d_scores[:, None, :], cache.keys)[:, 0]
    d_keys = d_scores[:, :, None] * cache.query[:, None, :]
    return d_query, d_keys, d_values


# ------------------------------------------------------------------------------------------------- combine
def combine_forward(context: np.ndarray, query: np.ndarray, W_c: np.ndarray) -> tuple[np.ndarray, CombineCache]:
    """Luong's attentional vector h~ = tanh(W_c [c; s]): c [B, F], s [B, H], W_c [H, F + H] -> h~ [B, H]."""
    inputs = np.concatenate([context, query], axis=-1)
    out = np.tanh(inputs @ W_c.T)
    return out, CombineCache(inputs, out, context.shape[-1])


def combine_backward(
    d_out: np.ndarray, cache: CombineCache, W_c: np.ndarray, dW_c: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """dh~ [B, H] -> (dc [B, F], ds [B, H]); accumulates dW_c."""
    dz = d_out * (1.0 - cache.out * cache.out)
    dW_c += dz.T @ cache.inputs
    d_inputs = dz @ W_c
    return d_inputs[:, : cache.context_size], d_inputs[:, cache.context_size :]
