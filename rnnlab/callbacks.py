"""Callbacks shared by every backend."""

from __future__ import annotations

import time
from typing import Any

import lightning as L
import torch


class Timing(L.Callback):
    """Times every training step and logs ``time/step_ms``, ``throughput/samples_per_s`` (and
    ``throughput/tokens_per_s`` where the task counts tokens), and ``time/epoch_s``. Same code for every backend.

    A step is timed from ``on_train_batch_start`` to ``on_train_batch_end``: forward, backward, optimizer step.
    On a GPU the device is synchronised at both ends so the time is the kernels' and not the launch's.
    Lightning hands step values to the loggers only every ``log_every_n_steps``, and each ``self.log`` costs
    about 0.25 ms on a CPU, so the callback logs on those steps only, the mean over every step since the last
    log: no step goes uncounted. ``step_times`` keeps every step's seconds for benchmarks.
    """

    def __init__(self) -> None:
        self.step_times: list[float] = []
        self._t0 = 0.0
        self._epoch_t0 = 0.0
        self._window = [0.0, 0, 0]  # seconds, samples, tokens since the last log
        self._logged_at = 0  # len(step_times) at the last log

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
        tokens = pl_module.tokens_of(batch) if hasattr(pl_module, "tokens_of") else 0
        window = self._window
        window[0] += dt
        window[1] += n
        window[2] += tokens
        steps_in_window = len(self.step_times) - self._logged_at
        every = trainer.log_every_n_steps or 1
        if not (trainer.fast_dev_run or trainer.global_step % every == 0):
            return
        seconds, samples, toks = window
        pl_module.log("time/step_ms", seconds * 1e3 / steps_in_window, on_step=True, on_epoch=False, batch_size=n)
        pl_module.log("throughput/samples_per_s", samples / seconds, on_step=True, on_epoch=False, batch_size=n)
        if toks:
            pl_module.log("throughput/tokens_per_s", toks / seconds, on_step=True, on_epoch=False, batch_size=n)
        self._window = [0.0, 0, 0]
        self._logged_at = len(self.step_times)

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        pl_module.log("time/epoch_s", time.perf_counter() - self._epoch_t0, on_step=False, on_epoch=True)
