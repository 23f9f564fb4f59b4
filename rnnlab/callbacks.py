"""Callbacks shared by every backend."""

from __future__ import annotations

import math
import os
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
        seconds = time.perf_counter() - self._epoch_t0  # sync_dist: the mean over the processes of a DDP run
        pl_module.log("time/epoch_s", seconds, on_step=False, on_epoch=True, sync_dist=True)


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
        start = self.rss_start_mb or 0.0
        # The kernel's RSS counters are approximate (per-CPU batches of pages), so a high-water mark read later can
        # come out a fraction of a MiB below the RSS read at the start; the peak is at least that start by definition.
        self.peak_rss_mb = max(_proc_status_mb("VmHWM") or _maxrss_mb(), start)
        self.peak_rss_delta_mb = self.peak_rss_mb - start
        metrics = {"memory/peak_rss_mb": self.peak_rss_mb, "memory/peak_rss_delta_mb": self.peak_rss_delta_mb}
        if pl_module.device.type == "cuda":
            self.cuda_peak_mb = torch.cuda.max_memory_allocated(pl_module.device) / 2**20
            metrics["memory/cuda_peak_mb"] = self.cuda_peak_mb
        if trainer.is_global_zero:  # self.log is refused in on_train_end: hand the values to the loggers
            for logger in trainer.loggers:
                logger.log_metrics(metrics, step=trainer.global_step)


class DivergenceGuard(L.Callback):
    """Stops the fit at the first NaN or Inf in the training loss or the gradients, before the optimizer step that
    would carry it into the weights, with a :class:`rnnlab.errors.DivergenceError` whose message is one line::

        divergence: train/loss is nan at step 37 (epoch 0, batch 37); last good checkpoint: .../last.ckpt

    ``step`` is ``trainer.global_step``, the optimizer steps completed before the bad one (the count checkpoint
    names use): the weights of step 37 produced the NaN. The gradient check is on the total 2-norm of all
    gradients before clipping (clipping by norm turns an Inf into NaNs, clipping by value into finite numbers, and
    both would hide the divergence otherwise). Since the error is raised inside the fit, train() never writes its
    final last.ckpt, and ModelCheckpoint's ``save_on_exception`` is switched off for it: the checkpoints already on
    disk are the last good ones.

    torch backend (automatic optimization): ``on_before_backward`` keeps each batch's loss tensor and
    ``on_before_optimizer_step`` (gradients complete, not yet clipped) adds the gradient norm to it and tests the
    sum once: one device synchronisation per optimizer step. NumPy backend (manual optimization): its
    ``training_step`` (rnnlab.backends.numpy) calls :meth:`check` with its loss (a Python float) and with the
    gradient norm its clipping computes anyway (by norm; otherwise one ``np.vdot`` per array). Under fp16 mixed
    precision Inf gradients are the loss scaler's business (it skips those steps), so only the loss is checked there.

    A finite loss can diverge too (SGD at a huge learning rate with clipping on climbs to 1e30 and stays
    finite): with ``max_loss_factor`` (default 1e6) the run also stops when the training loss exceeds that factor
    times the run's first training loss (at least 1), i.e. grew by six orders of magnitude. The first loss is kept
    in the checkpoint, so a resumed run compares with the same reference; null switches this check off.

    ``callbacks.divergence=null`` switches the guard off; ``check_gradients=false`` keeps the loss check only.
    """

    def __init__(
        self, check_loss: bool = True, check_gradients: bool = True, max_loss_factor: float | None = 1e6
    ) -> None:
        self.check_loss = check_loss
        self.check_gradients = check_gradients
        self.max_loss_factor = max_loss_factor
        self.first_loss: float | None = None  # the run's first training loss: the reference of max_loss_factor
        self._losses: list[tuple[int, torch.Tensor]] = []  # (batch index, loss) since the last optimizer step
        self._batch_idx = 0

    def state_dict(self) -> dict[str, Any]:
        return {"first_loss": self.first_loss}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.first_loss = state_dict.get("first_loss")

    def loss_limit(self) -> float | None:
        """The largest training loss that does not count as a divergence (None: no limit, or no reference yet)."""
        if self.max_loss_factor is None or self.first_loss is None or not math.isfinite(self.first_loss):
            return None
        return float(self.max_loss_factor) * max(abs(self.first_loss), 1.0)

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any, idx: int) -> None:
        self._batch_idx = idx

    def on_before_backward(self, trainer: L.Trainer, pl_module: L.LightningModule, loss: torch.Tensor) -> None:
        if self.check_loss:
            self._losses.append((self._batch_idx, loss.detach()))

    def on_before_optimizer_step(self, trainer: L.Trainer, pl_module: L.LightningModule, optimizer: Any) -> None:
        if getattr(getattr(pl_module, "backend", None), "checks_divergence_itself", False):
            return  # the NumPy backend's training step has checked before its own clipping
        losses, self._losses = self._losses, []
        norm = None
        if self.check_gradients and getattr(trainer.precision_plugin, "scaler", None) is None:
            norm = torch_grad_norm(pl_module.parameters())
        if losses and self.first_loss is None and self.max_loss_factor is not None:
            self.first_loss = float(losses[0][1])  # once per run: one synchronisation
        total = None
        for _, loss in losses:
            total = loss if total is None else total + loss
        if norm is not None:
            total = norm if total is None else total + norm
        if total is None:
            return
        ok = torch.isfinite(total)
        limit = self.loss_limit()
        if limit is not None and losses:
            ok = ok & (torch.stack([loss.reshape(()) for _, loss in losses]).max() <= limit)
        if bool(ok):
            return
        for batch_idx, loss in losses:  # something is wrong: say what (or a finite sum overflowed: go on)
            self.check(trainer, "train/loss", float(loss), batch_idx)
        if norm is not None:
            self.check(trainer, "gradient norm", float(norm), self._batch_idx)

    def check(self, trainer: L.Trainer, what: str, value: float, batch_idx: int) -> None:
        """Raise DivergenceError when ``value`` (``what`` at batch ``batch_idx`` of this epoch) is NaN or Inf, or,
        for the training loss, above :meth:`loss_limit`."""
        if what == "train/loss" and self.first_loss is None and self.max_loss_factor is not None:
            self.first_loss = value
        limit = self.loss_limit() if what == "train/loss" else None
        if math.isfinite(value) and (limit is None or value <= limit):
            return
        from rnnlab.errors import DivergenceError

        step, epoch = int(trainer.global_step), int(trainer.current_epoch)
        checkpoint = last_good_checkpoint(trainer)
        if checkpoint is None:
            where = f"none (nothing was saved before step {step}; run directory: {_shown(trainer.default_root_dir)})"
        else:
            where = _shown(checkpoint)
        state = f"is {value}"
        if math.isfinite(value):
            factor = f"callbacks.divergence.max_loss_factor={self.max_loss_factor:g}"
            state = f"is {value:.3g}, more than {factor} times the run's first loss {self.first_loss:.4g}"
        raise DivergenceError(
            f"divergence: {what} {state} at step {step} (epoch {epoch}, batch {batch_idx}); "
            f"last good checkpoint: {where}",
            what=what,
            value=value,
            step=step,
            epoch=epoch,
            batch=batch_idx,
            checkpoint=checkpoint,
        )

    def on_exception(self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException) -> None:
        from rnnlab.errors import DivergenceError

        if isinstance(exception, DivergenceError):  # the weights in memory produced the NaN: save nothing of them
            for saver in trainer.checkpoint_callbacks:
                if getattr(saver, "save_on_exception", False):
                    saver.save_on_exception = False

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._losses = []


class GradientNorm(L.Callback):
    """Logs the total 2-norm of the gradients before clipping (the norm ``torch.nn.utils.clip_grad_norm_`` and
    rnnlab's NumPy clipping compute), the same for both backends: ``train/grad_norm``, the norm of the step the
    loggers write (every ``trainer.log_every_n_steps``), and ``train/grad_norm_max``, the largest norm of every step
    since the previous write, so a spike between two writes is not lost. A NaN or Inf norm is logged as it is.

    torch backend (automatic optimization): read in ``on_before_optimizer_step``, which Lightning calls after the
    backward and before its clipping. NumPy backend (manual optimization, clipping in its own training step): that
    step calls :meth:`record` with the norm before it clips (``callbacks.grad_norm``; opt-in: the experiments that
    plot gradient norms add it, ``+callbacks.grad_norm={_target_: rnnlab.callbacks.GradientNorm}`` on the command
    line). The per-layer ``grad_norm/<layer>`` scalars of ``callbacks=analysis`` are read in
    ``on_before_optimizer_step`` too, so on the NumPy backend they are the norms after its clipping.
    """

    def __init__(self) -> None:
        self._max = -math.inf  # the largest norm since the last write (NaN once a NaN was seen)

    def on_before_optimizer_step(self, trainer: L.Trainer, pl_module: L.LightningModule, optimizer: Any) -> None:
        if not pl_module.automatic_optimization:
            return  # the NumPy backend's training step has called record() before its own clipping
        norm = torch_grad_norm(pl_module.parameters())
        if norm is not None:
            self.record(trainer, pl_module, float(norm))

    def record(self, trainer: L.Trainer | None, pl_module: L.LightningModule, norm: float) -> None:
        """One optimizer step's gradient norm before clipping; logged on the steps the loggers write."""
        if not math.isnan(self._max) and (math.isnan(norm) or norm > self._max):  # a NaN, once seen, stays
            self._max = norm
        if trainer is None:
            return
        every = max(1, int(trainer.log_every_n_steps or 1))
        if not (trainer.fast_dev_run or (trainer.global_step + 1) % every == 0):
            return
        pl_module.log("train/grad_norm", norm, on_step=True, on_epoch=False, batch_size=1)
        pl_module.log("train/grad_norm_max", self._max, on_step=True, on_epoch=False, batch_size=1)
        self._max = -math.inf


def gradient_norm_logger(trainer: L.Trainer | None) -> GradientNorm | None:
    """The trainer's GradientNorm callback, or None (no trainer, or the callback is not configured)."""
    if trainer is None:
        return None
    return next((c for c in trainer.callbacks if isinstance(c, GradientNorm)), None)


def divergence_guard(trainer: L.Trainer | None) -> DivergenceGuard | None:
    """The trainer's DivergenceGuard, or None (no trainer, or callbacks.divergence=null)."""
    if trainer is None:
        return None
    return next((c for c in trainer.callbacks if isinstance(c, DivergenceGuard)), None)


class ScheduleOnValidation(L.Callback):
    """scheduler=plateau: after every validation of the fit, the value of ``monitor`` (task.monitor) goes to the
    backend's schedule (torch's ReduceLROnPlateau, or the NumPy backend's from-scratch one), on both backends at the
    same point. Lightning runs ModelCheckpoint's hooks after every other callback's, so the checkpoint written at
    this validation holds the stepped schedule, and a resumed run repeats neither the step nor misses it."""

    def __init__(self, monitor: str) -> None:
        self.monitor = monitor

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        from lightning.pytorch.trainer.states import TrainerFn

        if trainer.sanity_checking or trainer.state.fn != TrainerFn.FITTING:
            return
        value = trainer.callback_metrics.get(self.monitor)
        if value is None:
            from rnnlab.errors import ConfigError

            raise ConfigError(
                f"task.monitor={self.monitor}: scheduler=plateau found no such value after a validation; it has "
                f"{', '.join(sorted(k for k in trainer.callback_metrics if k.startswith('val/')))}"
            )
        pl_module.backend.observe_validation(pl_module, float(value))


def torch_grad_norm(parameters: Any) -> torch.Tensor | None:
    """The total 2-norm of the parameters' gradients (as clip_grad_norm_ computes it), None when there are none."""
    grads = [p.grad for p in parameters if p.grad is not None]
    if not grads:
        return None
    total_norm = getattr(torch.nn.utils, "get_total_norm", None)  # torch >= 2.6: foreach norms, one tensor
    if total_norm is not None:
        return total_norm(grads)
    return torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in grads]))


def numpy_grad_norm(grads: dict[str, Any]) -> float:
    """The total 2-norm of NumPy gradients (one BLAS dot product per array); Inf or NaN when any entry is."""
    import numpy as np

    with np.errstate(over="ignore", invalid="ignore"):
        return math.sqrt(sum(float(np.vdot(g, g)) for g in grads.values() if g is not None))


def last_good_checkpoint(trainer: L.Trainer) -> str | None:
    """The newest checkpoint ModelCheckpoint has written in this fit (last.ckpt, else the best one), or None."""
    for saver in trainer.checkpoint_callbacks:
        for path in (getattr(saver, "last_model_path", ""), getattr(saver, "best_model_path", "")):
            if path and os.path.isfile(path):
                return str(path)
    return None


def _shown(path: Any) -> str:
    """A path relative to the working directory when it is below it, else as given."""
    text = str(path)
    try:
        rel = os.path.relpath(text)
    except ValueError:  # another drive (Windows)
        return text
    return text if rel.startswith("..") else rel
