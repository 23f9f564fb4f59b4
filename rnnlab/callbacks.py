"""Callbacks shared by every backend."""

from __future__ import annotations

import time
from typing import Any

import lightning as L
import torch


class Timing(L.Callback):
    """Logs ``time/step_ms`` for every training step, ``throughput/samples_per_s`` (and tokens per second
    where the task counts tokens), and ``time/epoch_s``. It is the same code for every backend.

    A step is timed from ``on_train_batch_start`` to ``on_train_batch_end``: forward, backward, optimizer step.
    On a GPU the device is synchronised at both ends so the time is the kernels' and not the launch's.
    ``step_times`` keeps every step's seconds for benchmarks.
    """

    def __init__(self) -> None:
        self.step_times: list[float] = []
        self._t0 = 0.0
        self._epoch_t0 = 0.0

    @staticmethod
    def _sync(pl_module: L.LightningModule) -> None:
        if pl_module.device.type == "cuda":
            torch.cuda.synchronize(pl_module.device)

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._epoch_t0 = time.perf_counter()

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any, idx: int) -> None:
        self._sync(pl_module)
        self._t0 = time.perf_counter()

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, idx: int
    ) -> None:
        self._sync(pl_module)
        dt = time.perf_counter() - self._t0
        self.step_times.append(dt)
        n = pl_module.batch_size_of(batch) if hasattr(pl_module, "batch_size_of") else len(batch[0])
        pl_module.log("time/step_ms", dt * 1e3, on_step=True, on_epoch=False, batch_size=n)
        pl_module.log("throughput/samples_per_s", n / dt, on_step=True, on_epoch=False, batch_size=n)
        if hasattr(pl_module, "tokens_of"):
            tokens = pl_module.tokens_of(batch)
            pl_module.log("throughput/tokens_per_s", tokens / dt, on_step=True, on_epoch=False, batch_size=n)

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        pl_module.log("time/epoch_s", time.perf_counter() - self._epoch_t0, on_step=False, on_epoch=True)
