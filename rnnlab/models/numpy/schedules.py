"""torch.optim.lr_scheduler's StepLR, CosineAnnealingLR (after an optional LinearLR warm-up, as SequentialLR runs
them) and ReduceLROnPlateau, in plain Python floats, for the NumPy backend.

torch computes most of its schedules recursively: each step's rate from the current rate (``group["lr"]``), not
from a closed form. The classes here replay that arithmetic operation by operation, in the same order and in
Python floats as torch does (``math.cos``, ``math.pi``), so the rates are bit-identical to torch's at every step
(tests/test_schedulers.py drives both side by side). Each takes the current rate and returns the next one, as
torch reads and writes the optimizer's param group.

The convention is torch's: a schedule built for base rate ``lr`` gives the rate of step 0 (:meth:`start`); after
each optimizer step :meth:`Schedule.step` gives the rate of the next one. :class:`Plateau` moves only when told a
validation's value (:meth:`Plateau.observe`). ``state_dict`` / ``load_state_dict`` carry everything that the next
rate depends on, as plain Python values.
"""

from __future__ import annotations

import math
from typing import Any, ClassVar

__all__ = ["Cosine", "Plateau", "Schedule", "StepDecay", "WarmupCosine", "build_schedule"]


class Schedule:
    """A rate that changes after every optimizer step (``per_step``) or after every validation (Plateau)."""

    per_step: ClassVar[bool] = True
    state_keys: ClassVar[tuple[str, ...]] = ()

    def start(self, lr: float) -> float:
        """The rate of the first step for base rate ``lr``."""
        return lr

    def step(self, lr: float) -> float:
        """After an optimizer step with rate ``lr``: the next step's rate."""
        return lr

    def state_dict(self) -> dict[str, Any]:
        return {"schedule": type(self).__name__, **{key: getattr(self, key) for key in self.state_keys}}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        kind = state.get("schedule")
        if kind != type(self).__name__:
            raise ValueError(f"cannot load the state of a {kind} schedule into {type(self).__name__}")
        for key in self.state_keys:
            setattr(self, key, state[key])


class StepDecay(Schedule):
    """torch's StepLR: the rate times ``gamma`` at every ``step_size``-th step (lr * gamma ** (n // step_size))."""

    state_keys = ("step_size", "gamma", "last_epoch")

    def __init__(self, step_size: int, gamma: float) -> None:
        self.step_size, self.gamma = int(step_size), float(gamma)
        self.last_epoch = 0

    def step(self, lr: float) -> float:
        self.last_epoch += 1
        if self.last_epoch == 0 or self.last_epoch % self.step_size != 0:
            return lr
        return lr * self.gamma


class Cosine(Schedule):
    """torch's CosineAnnealingLR with ``T_max`` steps down to ``eta_min``, in its recursive form:

    lr_n = (1 + cos(pi n / T)) / (1 + cos(pi (n - 1) / T)) * (lr_{n-1} - eta_min) + eta_min,

    which follows eta_min + (base - eta_min) (1 + cos(pi n / T)) / 2 and, past T, rises again (period 2T) as
    torch's does (at n - 1 - T = 0 mod 2T the ratio is 0/0, and torch adds (base - eta_min)(1 - cos(pi / T)) / 2).
    """

    state_keys = ("base_lr", "T_max", "eta_min", "last_epoch")

    def __init__(self, base_lr: float, T_max: int, eta_min: float) -> None:
        self.base_lr, self.T_max, self.eta_min = float(base_lr), int(T_max), float(eta_min)
        self.last_epoch = 0

    def step(self, lr: float) -> float:
        self.last_epoch += 1
        n, t, eta_min = self.last_epoch, self.T_max, self.eta_min
        if (n - 1 - t) % (2 * t) == 0:
            return lr + (self.base_lr - eta_min) * (1 - math.cos(math.pi / t)) / 2
        return (1 + math.cos(math.pi * n / t)) / (1 + math.cos(math.pi * (n - 1) / t)) * (lr - eta_min) + eta_min

    def restart(self) -> float:
        """The rate at step 0 in torch's closed form (SequentialLR starts its second schedule with it)."""
        self.last_epoch = 0
        return self.eta_min + (self.base_lr - self.eta_min) * (1 + math.cos(math.pi * self.last_epoch / self.T_max)) / 2


class WarmupCosine(Schedule):
    """``warmup_steps`` of torch's LinearLR (start_factor * base up to base, recursively:
    lr_n = lr_{n-1} (1 + (1 - s) / (W s + (n - 1)(1 - s)))), then :class:`Cosine` over the remaining
    ``total_steps - warmup_steps``, switched as torch's SequentialLR switches at its milestone."""

    state_keys = ("start_factor", "warmup_steps", "last_epoch")

    def __init__(self, base_lr: float, total_steps: int, warmup_steps: int, start_factor: float,
                 eta_min: float) -> None:  # fmt: skip
        self.base_lr, self.start_factor, self.warmup_steps = float(base_lr), float(start_factor), int(warmup_steps)
        self.cosine = Cosine(base_lr, int(total_steps) - self.warmup_steps, eta_min)
        self.last_epoch = 0

    def start(self, lr: float) -> float:
        return lr * self.start_factor

    def step(self, lr: float) -> float:
        self.last_epoch += 1
        n, w = self.last_epoch, self.warmup_steps
        if n < w:  # LinearLR with end_factor 1 and total_iters W
            s, end = self.start_factor, 1.0
            return lr * (1.0 + (end - s) / (w * s + (n - 1) * (end - s)))
        if n == w:
            return self.cosine.restart()
        return self.cosine.step(lr)

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "cosine": self.cosine.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        self.cosine.load_state_dict(state["cosine"])


class Plateau(Schedule):
    """torch's ReduceLROnPlateau: after ``patience`` validations without an improvement of the monitored value
    (``threshold``, relative or absolute, in ``mode`` min or max), the rate times ``factor`` (not below ``min_lr``;
    skipped when the change is no more than ``eps``), then ``cooldown`` validations that count as good."""

    per_step = False
    state_keys = ("mode", "factor", "patience", "threshold", "threshold_mode", "cooldown", "min_lr", "eps",
                  "best", "num_bad_epochs", "cooldown_counter", "last_epoch")  # fmt: skip

    def __init__(self, mode: str, factor: float, patience: int, threshold: float, threshold_mode: str,
                 cooldown: int, min_lr: float, eps: float) -> None:  # fmt: skip
        if mode not in ("min", "max") or threshold_mode not in ("rel", "abs"):
            raise ValueError(f"mode must be min or max and threshold_mode rel or abs, got {mode}, {threshold_mode}")
        self.mode, self.factor, self.patience = str(mode), float(factor), int(patience)
        self.threshold, self.threshold_mode = float(threshold), str(threshold_mode)
        self.cooldown, self.min_lr, self.eps = int(cooldown), float(min_lr), float(eps)
        self.best = math.inf if self.mode == "min" else -math.inf
        self.num_bad_epochs = self.cooldown_counter = self.last_epoch = 0

    def _is_better(self, a: float, best: float) -> bool:
        if self.mode == "min" and self.threshold_mode == "rel":
            return a < best * (1.0 - self.threshold)
        if self.mode == "min":
            return a < best - self.threshold
        if self.threshold_mode == "rel":
            return a > best * (self.threshold + 1.0)
        return a > best + self.threshold

    def observe(self, lr: float, value: float) -> float:
        """After a validation whose monitored value is ``value``: the rate from now on."""
        current = float(value)
        self.last_epoch += 1
        if self._is_better(current, self.best):
            self.best, self.num_bad_epochs = current, 0
        else:
            self.num_bad_epochs += 1
        if self.cooldown_counter > 0:
            self.cooldown_counter -= 1
            self.num_bad_epochs = 0
        if self.num_bad_epochs > self.patience:
            old = float(lr)
            new = max(old * self.factor, self.min_lr)
            if old - new > self.eps:
                lr = new
            self.cooldown_counter, self.num_bad_epochs = self.cooldown, 0
        return lr


def build_schedule(scheduler: dict[str, Any] | None, base_lr: float, total_steps: int | None, mode: str = "min"
                   ) -> Schedule | None:  # fmt: skip
    """The schedule of a ``scheduler`` config (None for none). ``total_steps``: the cosine's horizon when the config
    leaves it null; ``mode``: task.mode, for plateau."""
    name = str((scheduler or {}).get("name", "none"))
    if name == "none":
        return None
    if name == "step":
        return StepDecay(scheduler["step_size"], scheduler["gamma"])
    if name == "cosine":
        total = int(scheduler.get("total_steps") or total_steps)
        warmup = int(scheduler.get("warmup_steps") or 0)
        if warmup:
            return WarmupCosine(base_lr, total, warmup, scheduler["warmup_start_factor"], scheduler["eta_min"])
        return Cosine(base_lr, total, scheduler["eta_min"])
    if name == "plateau":
        keys = ("factor", "patience", "threshold", "threshold_mode", "cooldown", "min_lr", "eps")
        return Plateau(mode=mode, **{key: scheduler[key] for key in keys})
    raise ValueError(f"scheduler.name={name}: none, step, cosine or plateau")
