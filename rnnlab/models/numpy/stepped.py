"""A cell run one step at a time, for the regularisers that act inside the recurrence (rnnlab.models.regularisers).

``SteppedCell(cell, masks)`` has a cell's ``forward`` / ``backward`` (rnnlab/cells/protocol.py) and calls the
cell's own ones with T = 1 at every step, which the protocol allows for any cell, a plug-in's included. Between
the steps it applies one layer and direction's masks: the recurrent-dropout mask m_h on h_{t-1} as the cell reads
it, and zoneout z_t on every state. For step t and the b rows still running (variable lengths: a prefix of the
batch; the other rows keep their state, as in every cell)::

    forward:   s̃ = cell(Xp_t, (h_{t-1} ⊙ m_h, c_{t-1}, ...))       s_t = z_t ⊙ s_{t-1} + (1 - z_t) ⊙ s̃
    backward:  ds̃ = (1 - z_t) ⊙ ds_t                              (the cell's backward of this one step)
               ds_{t-1} = z_t ⊙ ds_t + [dh_{t-1} from the cell] ⊙ m_h  (h; the other states without m_h)

with ds_t = dL/ds_t from step t + 1 plus, for h, the gradient of the output y_t = h_t. The cell accumulates its
hidden-side gradients (W_hh, ...) into ``g`` at every step, so a run costs T calls of the cell instead of one:
the price of a mask inside the recurrence, which torch's fused kernels cannot apply either.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from rnnlab.cells.protocol import Cell, Params
from rnnlab.models.regularisers import DirectionMasks


@dataclass
class SteppedCache:
    steps: list[tuple[int, int, Any]]  # (t, rows b, the cell's cache of that step), in the order run
    shape: tuple[int, int, int]  # T, B, G*H
    consumed: bool = False


def _zone(z: np.ndarray | float, t: int, b: int) -> np.ndarray | float:
    return z[t, :b] if isinstance(z, np.ndarray) else z


class SteppedCell:
    def __init__(self, cell: Cell, masks: DirectionMasks):
        self.cell = cell
        self.masks = masks

    def forward(
        self, Xp: np.ndarray, state0: tuple[np.ndarray, ...], p: Params, batch_sizes: Any = None, reverse: bool = False
    ) -> tuple[np.ndarray, tuple[np.ndarray, ...], SteppedCache]:
        T, B, GH = Xp.shape
        H = self.cell.hidden_size
        m_h, zone = self.masks.state, self.masks.zone
        S = np.empty((T + 1, B, H), Xp.dtype)
        S[T if reverse else 0] = state0[0]
        state = [np.array(s, dtype=Xp.dtype, copy=True) for s in state0]
        steps = []
        for t in range(T - 1, -1, -1) if reverse else range(T):
            b = B if batch_sizes is None else int(batch_sizes[t])
            prev = [s[:b].copy() for s in state]
            read = list(prev)
            if m_h is not None:
                read[0] = prev[0] * m_h[:b]
            _, new, cache = self.cell.forward(Xp[t : t + 1, :b], tuple(read), p)
            for k, (s_prev, s_new) in enumerate(zip(prev, new, strict=True)):
                z = _zone(zone[k], t, b) if k < len(zone) else 0.0
                if isinstance(z, np.ndarray) or z > 0:
                    s_new = z * s_prev + (1 - z) * s_new
                state[k][:b] = s_new
            S[t if reverse else t + 1] = state[0]
            steps.append((t, b, cache))
        return S, tuple(s.copy() for s in state), SteppedCache(steps, (T, B, GH))

    def backward(
        self,
        d_out: np.ndarray | None,
        d_final: tuple[np.ndarray | None, ...],
        cache: SteppedCache,
        g: Params,
        dh_norms: np.ndarray | None = None,
    ) -> tuple[np.ndarray, tuple[np.ndarray, ...]]:
        if cache.consumed:
            raise RuntimeError("this cache has already been through backward")
        cache.consumed = True
        T, B, GH = cache.shape
        H = self.cell.hidden_size
        m_h, zone = self.masks.state, self.masks.zone
        dtype = next(iter(g.values())).dtype
        dA = np.zeros((T, B, GH), dtype)
        d_state = [np.zeros((B, H), dtype) if d is None else np.array(d, dtype=dtype, copy=True) for d in d_final]
        for t, b, step_cache in reversed(cache.steps):
            if d_out is not None:
                d_state[0][:b] += d_out[t, :b]  # the output y_t = h_t (rows past their length output nothing)
            if dh_norms is not None:
                dh_norms[t] = np.sqrt(np.vdot(d_state[0][:b], d_state[0][:b]))
            d_new, d_keep = [], []
            for k, d in enumerate(d_state):
                z = _zone(zone[k], t, b) if k < len(zone) else 0.0
                d_new.append((1 - z) * d[:b] if isinstance(z, np.ndarray) or z > 0 else d[:b].copy())
                d_keep.append(z * d[:b] if isinstance(z, np.ndarray) or z > 0 else None)
            dA_t, d_read = self.cell.backward(None, tuple(d_new), step_cache, g)
            dA[t, :b] = dA_t[0]
            for k, (dr, dk) in enumerate(zip(d_read, d_keep, strict=True)):
                dr = dr * m_h[:b] if k == 0 and m_h is not None else np.array(dr, copy=True)
                if dk is not None:
                    dr += dk
                d_state[k][:b] = dr
        return dA, tuple(d_state)
