"""One place that turns (spec, seed, backend) into a network."""

from __future__ import annotations

from typing import Any

from rnnlab.models.spec import NetSpec


def build_network(spec: NetSpec, seed: int, backend: str) -> Any:
    if backend == "torch":
        from rnnlab.models.torch.recurrent import TorchRecurrentNet

        return TorchRecurrentNet(spec, seed)
    raise ValueError(f"model.backend={backend} is not available")
