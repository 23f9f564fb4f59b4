"""Weight noise (Graves 2011), with which Chung et al. (2014) trained their networks: ``model.weight_noise=σ``.

At every training step each parameter w of the network (every weight and bias, the embedding and the head) is
replaced by w + ε, ε ~ N(0, σ²) drawn afresh, for that step's forward and backward; the optimizer then updates
the clean w with the gradient taken at w + ε. Validation, test, generation and checkpoints see the clean weights.

ε is drawn in NumPy from (seed, the optimizer step, the process's rank) and the parameter's name, in float64 and
then rounded to the parameter's dtype, so both backends add the same numbers to the same weights, a resumed run
the same as an uninterrupted one, and the micro-batches of one step (``trainer.accumulate_grad_batches``) share
one draw. The NumPy backend adds and removes the noise around its own forward and backward; the torch backend
adds it before the forward and restores the clean values after ``backward`` (``on_after_backward``), before
clipping and the optimizer step. The clean values are copies, put back exactly: no rounding from w + ε - ε.
"""

from __future__ import annotations

import zlib
from typing import Any

import numpy as np

from rnnlab.models.regularisers import step_seed


def draw(name: str, shape: tuple[int, ...], std: float, seed: int, step: int, rank: int = 0) -> np.ndarray:
    """ε for parameter ``name`` at optimizer step ``step``: float64 N(0, std²), the same on both backends."""
    rng = np.random.default_rng([step_seed(seed, step, rank), 0x57, zlib.crc32(name.encode())])
    return std * rng.standard_normal(shape)


def add_numpy(params: dict[str, np.ndarray], std: float, seed: int, step: int, rank: int = 0) -> dict[str, np.ndarray]:
    """Add the step's noise to the NumPy parameters in place; returns copies of the clean values."""
    clean = {}
    for name, p in params.items():
        clean[name] = p.copy()
        p += draw(name, p.shape, std, seed, step, rank).astype(p.dtype, copy=False)
    return clean


def restore_numpy(params: dict[str, np.ndarray], clean: dict[str, np.ndarray]) -> None:
    for name, value in clean.items():
        params[name][...] = value


def add_torch(module: Any, std: float, seed: int, step: int, rank: int = 0) -> dict[str, Any]:
    """Add the step's noise to a torch module's parameters in place (no autograd record); returns clones of the
    clean values."""
    import torch

    clean = {}
    with torch.no_grad():
        for name, p in module.named_parameters():
            clean[name] = p.detach().clone()
            eps = torch.from_numpy(draw(name, tuple(p.shape), std, seed, step, rank))
            p.add_(eps.to(device=p.device, dtype=p.dtype))
    return clean


def restore_torch(module: Any, clean: dict[str, Any]) -> None:
    import torch

    with torch.no_grad():
        for name, p in module.named_parameters():
            if name in clean:
                p.copy_(clean[name])
