"""The runtime's Lightning callbacks, added by ``train()`` itself (they are contracts, not options):

* :class:`GracefulStop`: the signal contract (rnnlab.runtime.signals): the fit ends at the end of a step, after
  its checkpoint;
* :class:`RunRecord`: the run's record in every checkpoint, and a resume's new learning rate
  (rnnlab.runtime.resume).

Imports Lightning: loaded by ``train()`` only.
"""

from __future__ import annotations

import signal
from collections.abc import Callable
from typing import Any

import lightning as L

from rnnlab.runtime.resume import RECORD_KEY, ResumePlan, apply_lr
from rnnlab.runtime.signals import RunInterrupted, SignalContract


class GracefulStop(L.Callback):
    """Ends the fit at the end of the training step in which a signal arrived, after writing last.ckpt for that
    step. Added by ``train()`` itself (not a configurable callback: it is the signal contract).

    While Lightning runs (fit, validate, test) this contract's handler is the process's SIGTERM and SIGINT handler:
    Lightning installs its own at the start of each run, and this callback puts the contract's back as the run
    starts (Lightning restores it anyway when the run ends). Lightning's handler would stop a validation half-way
    (its checkpoint would not resume exactly), and under DDP it broadcasts from inside the signal handler, which
    deadlocks when every process receives the signal, as under torchrun and SLURM (Lightning issue #20806). Here
    the handler only notes the signal; the processes agree on it at the end of each training step (one all-reduce
    of a flag: every process stops at the same step) and stop there together, after the checkpoint.

    ``save_last``: the function that writes last.ckpt for the current step (ResumingModelCheckpoint's), or None
    when checkpointing is off.
    """

    def __init__(
        self, signals: SignalContract, save_last: Callable[[Any], str | None] | None, claim: Any = None
    ) -> None:
        self.signals = signals
        self.save_last = save_last
        self.claim = claim
        self.saved: str | None = None  # the checkpoint written for the stop
        self.stopped_step: int | None = None
        self.stop_point: str | None = None
        self.mid_validation = False
        self._before_step = False  # a checkpoint is being written for a stop before a step

    # --------------------------------------------------------------------------- the handler during a run
    def _take_over(self, trainer: Any) -> None:
        self.signals.distributed = int(trainer.world_size) > 1
        self.signals.reinstall()

    def on_sanity_check_start(self, trainer: Any, pl_module: Any) -> None:
        self._take_over(trainer)

    def on_train_start(self, trainer: Any, pl_module: Any) -> None:
        self._take_over(trainer)

    def on_validation_start(self, trainer: Any, pl_module: Any) -> None:
        self._take_over(trainer)

    def on_test_start(self, trainer: Any, pl_module: Any) -> None:
        self._take_over(trainer)

    # ----------------------------------------------------------------------------------------- stopping
    def on_train_batch_start(self, trainer: Any, pl_module: Any, batch: Any, batch_idx: int) -> None:
        """A signal that came during a validation (which was finished, and its last.ckpt written) or between
        steps: stop before the next step. One process only: under DDP the processes agree at a step's end."""
        if self.signals.signum is None or self.signals.distributed:
            return
        self.stop_point = "before the step"
        self._before_step = True
        try:
            self._save(trainer)
        finally:
            self._before_step = False
        raise RunInterrupted(self.signals.signum)

    def on_save_checkpoint(self, trainer: Any, pl_module: Any, checkpoint: dict[str, Any]) -> None:
        """A checkpoint written before a step (the stop above), stored so that the resumed run logs and validates at
        the same steps as a run left alone. (With torch's own gradient accumulation Lightning's restart rule
        differs: left as it is there.)"""
        if not self._before_step or trainer.accumulate_grad_batches != 1:
            return
        # The run's batch count, total.ready, already counts the next batch here (Lightning counts a batch ready
        # before on_train_batch_start) and a restart does not rewind it (only the epoch's count): stored as is,
        # validations counted in steps (check_val_every_n_epoch=null) came one batch early after the resume. Stored
        # one back, every count says "all batches so far done", which Lightning restarts from without adding one to
        # the count of stepped batches either (the epoch's counts it rewinds itself, as before).
        total = checkpoint.get("loops", {}).get("fit_loop", {}).get("epoch_loop.batch_progress", {}).get("total")
        if isinstance(total, dict) and isinstance(total.get("ready"), int) and total["ready"] > total.get("started", 0):
            total["ready"] -= 1

    def on_train_batch_end(self, trainer: Any, pl_module: Any, outputs: Any, batch: Any, batch_idx: int) -> None:
        if self.claim is not None:
            self.claim.trained = True  # the directory now holds a run's results: it is never given back
        signum = self.signals.signum
        if self.signals.distributed:  # every process learns that one of them was signalled, at the same step
            from rnnlab.runtime.distributed import all_reduce_max

            signum = int(all_reduce_max([float(signum or 0)], pl_module.device)[0]) or None
            if signum is not None and self.signals.signum is None:
                self.signals.signum = signum
        if signum is None:
            return
        self.stop_point = "after the step"
        self._save(trainer)
        raise RunInterrupted(signum)

    def on_exception(self, trainer: Any, pl_module: Any, exception: BaseException) -> None:
        from lightning.pytorch.utilities.exceptions import SIGTERMException

        if not isinstance(exception, SIGTERMException) or self.saved is not None:
            return
        # Lightning's own handler had the signal (it came before this contract took over): its loops stop
        if self.signals.signum is None:
            self.signals.signum = signal.SIGTERM
        self.mid_validation = bool(trainer.validating or trainer.sanity_checking)

    def _save(self, trainer: Any) -> None:
        self.stopped_step = int(trainer.global_step)
        if self.save_last is not None and int(trainer.global_step) > 0:
            self.saved = self.save_last(trainer)


class RunRecord(L.Callback):
    """Writes the run's record into every checkpoint; on a resume, applies the plan's learning rate to the
    optimizer state before Lightning restores it."""

    def __init__(self, record: dict[str, Any], plan: ResumePlan | None = None) -> None:
        self.record = record
        self.plan = plan

    def on_save_checkpoint(self, trainer: Any, pl_module: Any, checkpoint: dict[str, Any]) -> None:
        checkpoint[RECORD_KEY] = self.record

    def on_load_checkpoint(self, trainer: Any, pl_module: Any, checkpoint: dict[str, Any]) -> None:
        if self.plan is not None and self.plan.lr is not None:
            apply_lr(checkpoint, self.plan.lr)
