"""Regularisation inside the recurrence, the same on both backends: variational dropout and zoneout.

``model.input_dropout``, ``model.recurrent_dropout`` and ``model.output_dropout`` are the variational (recurrent)
dropout of Gal & Ghahramani, "A Theoretically Grounded Application of Dropout in Recurrent Neural Networks" (2016):
one mask per sequence, the same at every step, on each layer's inputs, on the hidden state the recurrence reads and
on each layer's outputs. ``model.zoneout`` (and ``model.zoneout_c`` for the LSTM's cell state) is zoneout of Krueger
et al., "Zoneout: Regularizing RNNs by Randomly Preserving Hidden Activations" (2017): at every step each unit keeps
its previous value with probability p. For one layer and direction, with m masks and ⊙ the elementwise product::

    x̃_t = x_t ⊙ m_x / (1 - p_x)                         m_x ~ Bernoulli(1 - p_x) [B, I], drawn once per sequence
    s̃_t = cell(x̃_t, (h_{t-1} ⊙ m_h / (1 - p_h), c_{t-1}, ...))  m_h ~ Bernoulli(1 - p_h) [B, H], once per sequence
    s_t = z_t ⊙ s_{t-1} + (1 - z_t) ⊙ s̃_t             for s = h (rate p_z) and c (p_zc); z_t ~ Bernoulli(p), per step
    y_t = h_t ⊙ m_y / (1 - p_y)                          m_y ~ Bernoulli(1 - p_y) [B, D * H], once per sequence

The state mask multiplies h_{t-1} where the cell reads it. In the plain RNN and every LSTM h_{t-1} enters only
through W_hh h_{t-1}, so this is Gal & Ghahramani's form exactly (their "tied" variant, one mask for all gates). In
the GRU forms h_{t-1} also enters the interpolation z ⊙ h_{t-1}, which the mask then drops too (the state dropout
that Semeniuta et al. 2016 call memory loss); use zoneout there if that matters. The cell state c is never dropped.
In evaluation no mask is drawn and zoneout keeps the expectation, s_t = p s_{t-1} + (1 - p) s̃_t.

Every mask is drawn here, in NumPy, from one generator that the backend reseeds at every training step from
(seed, step, rank) (``reseed``), in a fixed order: layer by layer, the input mask, then per direction the state
mask and the zoneout masks (h, then c), then the output mask. Both backends therefore use the same masks, and a
resumed run the same masks as an uninterrupted one. torch gets them as tensors; its fused kernels cannot apply a
mask inside the recurrence, so with any of these on, the torch network runs the cell's reference module
(``rnnlab.models.torch.reference``), step by step, as the NumPy backend does.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np


def step_seed(seed: int, step: int, rank: int = 0) -> int:
    """A 63-bit seed for one training step of one process, from (seed, step, rank) alone."""
    return int(np.random.SeedSequence([seed % 2**63, step, rank]).generate_state(1, np.uint64)[0] >> 1)


KEYS = ("input_dropout", "recurrent_dropout", "output_dropout", "zoneout", "zoneout_c")


@dataclass(frozen=True)
class Regularisers:
    """The rates of one network (``model.*`` keys of the same names); all 0 turns everything here off."""

    input_dropout: float = 0.0
    recurrent_dropout: float = 0.0
    output_dropout: float = 0.0
    zoneout: float = 0.0  # the hidden state h
    zoneout_c: float | None = None  # the cell state c; None: the same as zoneout

    @classmethod
    def of(cls, spec: Any) -> Regularisers:
        """The rates a NetSpec (or anything with these attributes) asks for."""
        return cls(**{k: getattr(spec, k) for k in KEYS if getattr(spec, k, None) is not None})

    @property
    def active(self) -> bool:
        return any(r > 0 for r in (self.input_dropout, self.recurrent_dropout, self.output_dropout, *self.zone_all))

    @property
    def zone_all(self) -> tuple[float, float]:
        return self.zoneout, self.zoneout if self.zoneout_c is None else self.zoneout_c

    def zone_rates(self, states: tuple[str, ...]) -> tuple[float, ...]:
        """The zoneout probability of each of a cell's states: h ``zoneout``, c ``zoneout_c``, none for any other
        (the previous gates that the fgr LSTM carries are not memory to preserve)."""
        z, zc = self.zone_all
        return tuple({"h": z, "c": zc}.get(name, 0.0) for name in states)


@dataclass
class DirectionMasks:
    """One layer and direction's masks inside the recurrence."""

    state: np.ndarray | None  # [B, H] scaled keep mask on h_{t-1} as the cell reads it, or None
    zone: tuple[np.ndarray | float, ...]  # per state: [T, B, H] 1 = keep the previous value (training), or p (eval)


@dataclass
class LayerMasks:
    input: np.ndarray | None  # [B, I] scaled keep mask on the layer's input, or None
    directions: list[DirectionMasks]
    output: np.ndarray | None  # [B, D * H] scaled keep mask on the layer's output, or None


def _keep(rng: np.random.Generator, p: float, shape: tuple[int, ...], dtype: Any) -> np.ndarray | None:
    """Inverted dropout: 1 / (1 - p) with probability 1 - p, else 0 (uniforms drawn in float64, so the mask is the
    same whatever the dtype)."""
    if p <= 0:
        return None
    keep = rng.random(shape) >= p
    return (keep * (1.0 / (1.0 - p))).astype(dtype)


class MaskSource:
    """Draws the masks of one network's training forward passes (module docstring)."""

    def __init__(self, regs: Regularisers, seed: int):
        self.regs = regs
        self.rng = np.random.default_rng([int(seed), 3])

    def reseed(self, step_seed: int) -> None:
        """Start the masks of one training step (both backends call this with the same seed)."""
        self.rng = np.random.default_rng([int(step_seed), 3])

    def draw(
        self, input_sizes: list[int], directions: int, hidden: int, states: tuple[str, ...], T: int, B: int, dtype: Any
    ) -> list[LayerMasks]:
        """Training masks for every layer (``input_sizes[l]``: layer l's input width), in the batch's own order."""
        r, rng = self.regs, self.rng
        rates = r.zone_rates(states)
        layers = []
        for size in input_sizes:
            m_in = _keep(rng, r.input_dropout, (B, size), dtype)
            dirs = []
            for _ in range(directions):
                m_h = _keep(rng, r.recurrent_dropout, (B, hidden), dtype)
                zone = tuple((rng.random((T, B, hidden)) < p).astype(dtype) if p > 0 else 0.0 for p in rates)
                dirs.append(DirectionMasks(m_h, zone))
            m_out = _keep(rng, r.output_dropout, (B, directions * hidden), dtype)
            layers.append(LayerMasks(m_in, dirs, m_out))
        return layers

    def evaluation(self, num_layers: int, directions: int, states: tuple[str, ...]) -> list[LayerMasks] | None:
        """No dropout; zoneout's expectation (None when nothing acts in evaluation)."""
        rates = self.regs.zone_rates(states)
        if not any(p > 0 for p in rates):
            return None
        return [LayerMasks(None, [DirectionMasks(None, rates) for _ in range(directions)], None)] * num_layers


def reorder(masks: list[LayerMasks], order: np.ndarray) -> list[LayerMasks]:
    """The masks with their batch rows in ``order`` (the NumPy network sorts a batch by length)."""

    def rows(a: Any, axis: int) -> Any:
        return np.take(a, order, axis=axis) if isinstance(a, np.ndarray) else a

    return [
        LayerMasks(
            rows(m.input, 0),
            [DirectionMasks(rows(d.state, 0), tuple(rows(z, 1) for z in d.zone)) for d in m.directions],
            rows(m.output, 0),
        )
        for m in masks
    ]
