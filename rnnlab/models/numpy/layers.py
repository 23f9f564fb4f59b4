"""The non-recurrent layers: embedding (and the one-hot input that replaces it), linear.

Each layer is a pair of functions, forward and backward side by side. Backward functions *accumulate* parameter
gradients into arrays the caller owns (``dW += ...``), as autograd accumulates into ``.grad``.

torch.nn.Embedding:  y[n] = W[x[n]]                      (a row gather; row ``padding_idx`` gets no gradient)
torch.nn.Linear:     y = x W^T + b
One-hot input:       one_hot(x) W^T = W^T[x]             (a row gather of the transposed weight, no matmul)
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from rnnlab.models.numpy import memory

# Below this many target rows, a scatter-add is a one-hot matrix product (BLAS); above it, sort and reduce.
ONE_HOT_GEMM_MAX_ROWS = 256


def scatter_add_rows(target: np.ndarray, index: np.ndarray, rows: np.ndarray) -> None:
    """``target[index[n]] += rows[n]`` for every n, repeated indices summed (``np.add.at``, but fast).

    target [V, D], index [N] ints in [0, V), rows [N, D]. Small V: ``one_hot(index)^T @ rows``, one GEMM.
    Large V: sort the indices, sum each run of equal indices with ``np.add.reduceat``, add once per distinct row.
    """
    index = np.asarray(index).reshape(-1)
    if index.size == 0:
        return
    num_rows = target.shape[0]
    if num_rows <= ONE_HOT_GEMM_MAX_ROWS:
        one_hot_t = memory.empty((num_rows, index.size), rows.dtype)  # [V, N]
        np.equal(np.arange(num_rows)[:, None], index[None, :], out=one_hot_t, casting="unsafe")
        add_matmul(target, one_hot_t, rows)
        return
    order = np.argsort(index, kind="stable")
    sorted_index = index[order]
    starts = np.flatnonzero(np.concatenate(([True], sorted_index[1:] != sorted_index[:-1])))
    target[sorted_index[starts]] += np.add.reduceat(rows[order], starts, axis=0)


# ---------------------------------------------------------------------------------------------------- embedding
def embedding_forward(W: np.ndarray, ids: np.ndarray) -> np.ndarray:
    """y = W[ids]: ids [...] ints -> [..., E]. The cache is ``ids`` itself."""
    return np.take(W, ids, axis=0, out=memory.empty((*np.shape(ids), W.shape[1]), W.dtype))


def embedding_backward(dy: np.ndarray, ids: np.ndarray, dW: np.ndarray, padding_idx: int | None = None) -> None:
    """dW[v] += sum of dy[n] over the positions n with ids[n] = v; dW[padding_idx] receives nothing (as torch)."""
    ids = np.asarray(ids).reshape(-1)
    dy = dy.reshape(ids.size, dW.shape[1])
    if padding_idx is not None:
        keep = ids != padding_idx
        if not keep.all():
            ids, dy = ids[keep], dy[keep]
    scatter_add_rows(dW, ids, dy)


# ------------------------------------------------------------------------------------------------------ linear
@dataclass
class LinearCache:
    x: np.ndarray  # the input, flattened to [N, in_features]
    shape: tuple[int, ...]  # the input's shape


def linear_forward(x: np.ndarray, W: np.ndarray, b: np.ndarray | None) -> tuple[np.ndarray, LinearCache]:
    """y = x W^T + b over the last axis: x [..., in] -> y [..., out]."""
    x2 = x.reshape(-1, x.shape[-1])
    y = np.matmul(x2, W.T, out=memory.empty((x2.shape[0], W.shape[0]), W.dtype))
    if b is not None:
        y += b
    return y.reshape(*x.shape[:-1], W.shape[0]), LinearCache(x2, x.shape)


def linear_backward(
    dy: np.ndarray, cache: LinearCache, W: np.ndarray, dW: np.ndarray, db: np.ndarray | None, need_dx: bool = True
) -> np.ndarray | None:
    """dW += dy^T x, db += sum_n dy[n]; returns dx = dy W (shaped like x), or None without ``need_dx``."""
    dy2 = dy.reshape(-1, W.shape[0])
    add_matmul(dW, dy2.T, cache.x)
    if db is not None:
        db += column_sum(dy2)
    if not need_dx:
        return None
    return np.matmul(dy2, W, out=memory.empty((dy2.shape[0], W.shape[1]), W.dtype)).reshape(cache.shape)


def add_matmul(acc: np.ndarray, a: np.ndarray, b: np.ndarray) -> None:
    """acc += a @ b (the product goes through a pooled, aligned buffer: NumPy's matmul cannot accumulate)."""
    product = np.matmul(a, b, out=memory.empty(acc.shape, acc.dtype))
    acc += product


def column_sum(m: np.ndarray) -> np.ndarray:
    """sum over the rows of a 2-D array, as a BLAS matrix-vector product (faster than ``m.sum(0)``)."""
    return np.ones(m.shape[0], dtype=m.dtype) @ m


# ----------------------------------------------------------------------------------------------- one-hot input
def one_hot_projection_forward(W_T: np.ndarray, ids: np.ndarray, b: np.ndarray) -> np.ndarray:
    """one_hot(ids) W^T + b as a row gather: W_T [V, out] (the transposed weight), ids [...] -> [..., out]."""
    y = W_T[ids]
    y += b
    return y


def one_hot_projection_backward(dy: np.ndarray, ids: np.ndarray, vocab_size: int) -> np.ndarray:
    """The weight gradient, transposed: dW^T[v] = sum of dy[n] over the positions n with ids[n] = v ([V, out]).

    (The bias gradient is ``column_sum(dy)``, as for any linear layer.)
    """
    dy2 = dy.reshape(-1, dy.shape[-1])
    dW_T = np.zeros((vocab_size, dy2.shape[1]), dtype=dy2.dtype)
    scatter_add_rows(dW_T, ids, dy2)
    return dW_T
