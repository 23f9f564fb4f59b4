"""Greedy and beam-search decoding for task=seq2seq, shared by both backends through the ``StepDecoder`` protocol
(rnnlab.models.numpy.seq2seq.NumpySeq2Seq and rnnlab.models.torch.seq2seq.TorchSeq2Seq implement it)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

import numpy as np


# ------------------------------------------------------------------------------------------- decoding protocol
class StepDecoder(Protocol):
    """What greedy and beam search need from a network (both backends implement it, without gradients)."""

    def start(self, src: Any, src_len: Any) -> tuple[Any, Any]:
        """Encode a batch: (memory, initial decoder state)."""

    def step(self, memory: Any, state: Any, tokens: np.ndarray) -> tuple[np.ndarray, Any, np.ndarray | None]:
        """One decoder step for N rows (memory rows = N): (log-probabilities [N, V] float64, new state,
        attention weights [N, S] or None)."""

    def select(self, memory: Any, state: Any, index: np.ndarray) -> tuple[Any, Any]:
        """Rows ``index`` of the memory and of the state (beam expansion and reordering)."""


def greedy_decode(
    net: StepDecoder, src: Any, src_len: Any, max_len: int, sos_id: int, eos_id: int, with_attention: bool = False
) -> tuple[list[list[int]], np.ndarray | None]:
    """Feed back the argmax token until <eos> (not included in the output) or ``max_len`` steps.

    Returns the token lists and, with ``with_attention``, the weights [B, steps, S] of every step taken.
    """
    memory, state = net.start(src, src_len)
    B = len(src_len)
    tokens = np.full(B, sos_id, dtype=np.int64)
    out: list[list[int]] = [[] for _ in range(B)]
    done = np.zeros(B, dtype=bool)
    weights = []
    for _ in range(max_len):
        log_probs, state, w = net.step(memory, state, tokens)
        tokens = np.argmax(log_probs, axis=1)
        if with_attention and w is not None:
            weights.append(w)
        for b in np.flatnonzero(~done):
            if tokens[b] == eos_id:
                done[b] = True
            else:
                out[b].append(int(tokens[b]))
        if done.all():
            break
    attention = np.stack(weights, axis=1) if weights else None
    return out, attention


def beam_search(
    net: StepDecoder, src: Any, src_len: Any, beam_size: int, max_len: int, sos_id: int, eos_id: int
) -> list[list[int]]:
    """Beam search with length-normalised scores; returns the best token list per example (without <eos>).

    Each example keeps ``beam_size`` live hypotheses with summed log-probabilities. At each step the 2K best
    extensions (ties to the lower beam, then token id) are scanned in order: one ending in <eos> becomes a finished
    hypothesis with score log p(y) / |y| (|y| counts the <eos>: the mean log-probability per token), the others fill
    the K live slots. An example stops once it has K finished hypotheses; after ``max_len`` steps its live
    hypotheses are finished too (unterminated, normalised by their length). The answer is the finished hypothesis
    with the highest normalised score (the first found on ties). With K = 1 this is exactly greedy decoding.
    """
    K = int(beam_size)
    memory, state = net.start(src, src_len)
    B = len(src_len)
    memory, state = net.select(memory, state, np.repeat(np.arange(B), K))
    tokens = np.full(B * K, sos_id, dtype=np.int64)
    scores = np.full((B, K), -np.inf)
    scores[:, 0] = 0.0  # one live hypothesis at the start (the others would duplicate it)
    hyps: list[list[list[int]]] = [[[] for _ in range(K)] for _ in range(B)]
    finished: list[list[tuple[float, list[int]]]] = [[] for _ in range(B)]
    done = np.zeros(B, dtype=bool)
    for _ in range(max_len):
        log_probs, state, _ = net.step(memory, state, tokens)
        V = log_probs.shape[1]
        flat = (scores[:, :, None] + log_probs.reshape(B, K, V)).reshape(B, K * V)
        top = np.argsort(-flat, axis=1, kind="stable")[:, : 2 * K]
        new_scores = np.full((B, K), -np.inf)
        new_from = np.zeros((B, K), dtype=np.int64)
        new_tokens = np.full((B, K), eos_id, dtype=np.int64)
        new_hyps: list[list[list[int]]] = [[[] for _ in range(K)] for _ in range(B)]
        for b in np.flatnonzero(~done):
            n = 0
            for idx in top[b]:
                score = float(flat[b, idx])
                if score == -np.inf:
                    break
                k, v = divmod(int(idx), V)
                if v == eos_id:
                    finished[b].append((score / (len(hyps[b][k]) + 1), hyps[b][k]))
                else:
                    new_scores[b, n], new_from[b, n], new_tokens[b, n] = score, k, v
                    new_hyps[b][n] = [*hyps[b][k], v]
                    n += 1
                    if n == K:
                        break
            if len(finished[b]) >= K:
                done[b] = True
        if done.all():
            break
        scores, hyps = new_scores, new_hyps
        index = (np.arange(B)[:, None] * K + new_from).reshape(-1)
        memory, state = net.select(memory, state, index)
        tokens = new_tokens.reshape(-1)
    else:
        for b in np.flatnonzero(~done):
            for k in range(K):
                if scores[b, k] > -np.inf:
                    finished[b].append((float(scores[b, k]) / max(len(hyps[b][k]), 1), hyps[b][k]))
    best = []
    for b in range(B):
        top_score = max(s for s, _ in finished[b])
        best.append(next(list(h) for s, h in finished[b] if s == top_score))
    return best


def strip_special(ids: Sequence[int], eos_id: int, skip: Sequence[int] = ()) -> list[int]:
    """Tokens up to (excluding) the first ``eos_id``, without the ``skip`` ids (e.g. <sos>, <pad>)."""
    out = []
    for i in ids:
        if i == eos_id:
            break
        if i not in skip:
            out.append(int(i))
    return out
