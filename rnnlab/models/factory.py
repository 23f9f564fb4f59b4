"""One place that turns (spec, seed, backend) into a network."""

from __future__ import annotations

from typing import Any

from rnnlab.models.spec import NetSpec


def build_network(spec: NetSpec, seed: int, backend: str, dtype: str = "float32") -> Any:
    """The torch backend builds in float32 (Lightning converts for other precisions); NumPy takes ``dtype``."""
    if backend == "torch":
        from rnnlab.models.torch.recurrent import TorchRecurrentNet

        return TorchRecurrentNet(spec, seed)
    if backend == "numpy":
        import numpy as np

        from rnnlab.models.numpy.net import NumpyRecurrentNet

        return NumpyRecurrentNet(spec, seed, dtype=np.dtype(dtype))
    raise ValueError(f"model.backend={backend} is not available")
