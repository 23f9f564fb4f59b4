"""Callbacks shared by every backend."""

from __future__ import annotations

import resource
import sys
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
    log: no step goes uncounted. ``step_times`` keeps every step's seconds (and ``step_samples`` its batch size)
    for benchmarks and the run's summary.json.
    """

    def __init__(self) -> None:
        self.step_times: list[float] = []
        self.step_samples: list[int] = []
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
        self.step_samples.append(int(n))
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


def _proc_status_mb(field: str) -> float | None:
    """``VmRSS`` or ``VmHWM`` of this process from /proc/self/status, in MiB (None off Linux)."""
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) / 1024  # kB
    except OSError:
        pass
    return None


def _maxrss_mb() -> float:
    """The process's peak RSS since it started (getrusage; KiB on Linux, bytes on macOS)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 1024


class PeakMemory(L.Callback):
    """The peak resident memory of the fit: ``peak_rss_mb`` (the process's high-water mark, reset when the fit
    starts) and ``peak_rss_delta_mb`` (that peak minus the RSS at the start: what training itself added).
    Both are logged once, when training ends, as ``memory/peak_rss_mb`` and ``memory/peak_rss_delta_mb``; on a
    GPU ``torch.cuda.max_memory_allocated`` as ``memory/cuda_peak_mb`` too.

    On Linux writing "5" to /proc/self/clear_refs resets the high-water mark (VmHWM) to the current RSS, so the
    peak is the fit's, not the data loading's before it. Where that fails the peak is getrusage's since the
    process started.
    """

    def __init__(self) -> None:
        self.rss_start_mb: float | None = None
        self.peak_rss_mb: float | None = None
        self.peak_rss_delta_mb: float | None = None
        self.cuda_peak_mb: float | None = None

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        try:
            with open("/proc/self/clear_refs", "w") as clear:
                clear.write("5")
        except OSError:
            pass
        self.rss_start_mb = _proc_status_mb("VmRSS") or _maxrss_mb()
        if torch.cuda.is_available():
            torch.cuda.reset_peak_memory_stats()

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.peak_rss_mb = _proc_status_mb("VmHWM") or _maxrss_mb()
        self.peak_rss_delta_mb = self.peak_rss_mb - (self.rss_start_mb or 0.0)
        metrics = {"memory/peak_rss_mb": self.peak_rss_mb, "memory/peak_rss_delta_mb": self.peak_rss_delta_mb}
        if pl_module.device.type == "cuda":
            self.cuda_peak_mb = torch.cuda.max_memory_allocated(pl_module.device) / 2**20
            metrics["memory/cuda_peak_mb"] = self.cuda_peak_mb
        if trainer.is_global_zero:  # self.log is refused in on_train_end: hand the values to the loggers
            for logger in trainer.loggers:
                logger.log_metrics(metrics, step=trainer.global_step)
