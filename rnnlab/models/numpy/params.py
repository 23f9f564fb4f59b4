"""What every NumPy network shares: named parameters and gradients, a dropout generator, and checkpointing."""

from __future__ import annotations

from typing import Any

import numpy as np


class NumpyParameters:
    """Mixin over ``params`` and ``grads`` (``{torch name: array}`` of ``_dtype``) and ``rng`` (dropout masks),
    which the network's ``__init__`` sets."""

    params: dict[str, np.ndarray]
    grads: dict[str, np.ndarray]
    rng: np.random.Generator
    _dtype: np.dtype

    @property
    def dtype(self) -> np.dtype:
        return self._dtype

    def load_arrays(self, arrays: dict[str, Any]) -> None:
        """Copy named arrays (torch layout, any float dtype) into the parameters; every parameter must be given."""
        missing, extra = set(self.params) - set(arrays), set(arrays) - set(self.params)
        if missing or extra:
            raise KeyError(f"parameter names differ: missing {sorted(missing)}, unexpected {sorted(extra)}")
        for name, p in self.params.items():
            value = np.asarray(arrays[name])
            if value.shape != p.shape:
                raise ValueError(f"{name}: shape {value.shape}, expected {p.shape}")
            np.copyto(p, value, casting="unsafe")
        self._parameters_changed()

    def _parameters_changed(self) -> None:
        """Called after ``load_arrays``: drop anything precomputed from the old parameters."""

    def zero_grad(self) -> None:
        for g in self.grads.values():
            g.fill(0)

    def state_dict(self) -> dict[str, Any]:
        """Parameters (copies) and the dropout generator's state: what a checkpoint needs to resume exactly."""
        return {
            "params": {name: p.copy() for name, p in self.params.items()},
            "rng": self.rng.bit_generator.state,
            "dtype": str(self._dtype),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.load_arrays(state["params"])
        if "rng" in state:
            self.rng.bit_generator.state = state["rng"]
