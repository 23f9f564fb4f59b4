"""The signal contract: what SIGTERM, SIGINT and a SLURM preemption do to a run.

* **SIGTERM** (what SLURM and most schedulers send before a kill or at a time limit) and **SIGINT** (Ctrl+C) during
  training: the run finishes the step it is in, writes ``checkpoints/last.ckpt`` for that step (the same exact
  state that ``save_last_every_n_steps`` writes, from which a resume is bit-identical to an uninterrupted run),
  writes ``summary.json`` with ``"status": "interrupted"``, prints one line that says how to resume, and exits
  with 128 + the signal's number (143 for SIGTERM, 130 for SIGINT). A second SIGINT stops at once; the
  checkpoint on disk is then the previous one, which the line names.
* The same signal while the data loads, the network is built, or the test split is scored stops at once (nothing
  there is worth finishing): a run that had not taken a training step gives its directory back
  (rnnlab.runtime.rundir), one that had keeps its checkpoints and writes its summary.
* In a sweep the interrupted job stops the sweep: the jobs not yet started do not start, the interrupted job and
  any failed ones are listed, and the exit status is 143 (130).
* **SLURM preemption and time limits** under ``hydra/launcher=slurm_*`` (submitit): submitit sends its
  requeue signal (``SIGUSR2`` unless ``SUBMITIT_PREEMPT_SIGNAL`` says otherwise) before the kill. rnnlab lets
  the run finish its step and write last.ckpt, then hands the signal to submitit's own handler, which requeues
  the job; the requeued job takes back its run directory and resumes from that checkpoint. Lightning's own SLURM
  auto-requeue (``SIGUSR1``) is switched off under submitit, so that exactly one mechanism requeues.

Lightning installs a SIGTERM handler of its own for each ``fit``/``validate``/``test``; rnnlab's GracefulStop
callback (rnnlab.runtime.callbacks) puts this contract's handler back as soon as the run starts, so that there is
one handler and one behaviour: Lightning's would stop a validation half-way (its checkpoint would not resume
exactly) and, under DDP, broadcasts from inside the signal handler, which deadlocks when every process gets the
signal, as under torchrun and SLURM (Lightning issue #20806). Here the handler only notes the signal, and the
processes of a DDP run agree on it at the end of each training step (one all-reduce of a flag), so that all of them
stop at the same step and write its checkpoint together.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
from types import FrameType
from typing import Any

log = logging.getLogger("rnnlab")

HANDLED = (signal.SIGTERM, signal.SIGINT)


def signal_name(signum: int) -> str:
    try:
        return signal.Signals(signum).name
    except ValueError:
        return f"signal {signum}"


class RunInterrupted(BaseException):
    """A run stopped by a signal. A BaseException, like KeyboardInterrupt: Hydra's job runner and the sweepers catch
    ``Exception`` and would go on with the next job. ``message`` is the one line for the user."""

    def __init__(self, signum: int, message: str = "") -> None:
        super().__init__(message or f"interrupted by {signal_name(signum)}")
        self.signum = signum
        self.message = message or f"interrupted by {signal_name(signum)}"

    @property
    def exit_code(self) -> int:
        return 128 + int(self.signum)


class SignalContract:
    """Installed by ``train()`` around the whole run (``with SignalContract() as signals:``).

    Outside the training loop a signal raises :class:`RunInterrupted` at once. Inside it (``signals.in_fit``)
    the signal is only noted: :class:`GracefulStop` ends the loop at the end of the step, after the checkpoint.
    """

    def __init__(self) -> None:
        self.signum: int | None = None
        self.in_fit = False
        self.distributed = False  # the run has several processes (set by GracefulStop)
        self._previous: dict[int, Any] = {}
        self._preempt: tuple[int, Any] | None = None  # (signal, submitit's handler) under a SLURM launcher
        self._requeued = False  # submitit's handler has been called: the job is requeued once

    # ----------------------------------------------------------------------------------- installation
    def __enter__(self) -> SignalContract:
        import threading

        if threading.current_thread() is not threading.main_thread():
            return self  # signal handlers can only be set from the main thread (a joblib thread backend)
        for signum in HANDLED:
            self._previous[signum] = signal.getsignal(signum)
            signal.signal(signum, self._handle)
        preempt = _submitit_preempt_signal()
        if preempt is not None:
            handler = signal.getsignal(preempt)
            if callable(handler):  # submitit's checkpoint-and-requeue: called once the step's checkpoint is written
                self._preempt = (preempt, handler)
                self._previous[preempt] = handler
                signal.signal(preempt, self._handle)
        return self

    def __exit__(self, *exc: Any) -> None:
        for signum, handler in self._previous.items():
            with contextlib.suppress(ValueError, TypeError):  # not the main thread; a handler not set from Python
                signal.signal(signum, handler)
        self._previous = {}

    # ----------------------------------------------------------------------------------------- handling
    def reinstall(self) -> None:
        """Make this contract the handler of SIGTERM and SIGINT again (Lightning installs its own for each run)."""
        import threading

        if self._previous and threading.current_thread() is threading.main_thread():
            for signum in HANDLED:
                if signal.getsignal(signum) != self._handle:
                    signal.signal(signum, self._handle)

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self.signum is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt  # a second Ctrl+C: stop now
        if self.signum is not None and self._preempt is not None and signum == self._preempt[0]:
            return  # the preemption signal again (scancel and srun can each deliver it): the stop is under way
        if self.signum is None:
            self.signum = signum
            log.warning("Received %s: stopping at the end of this training step", signal_name(signum))
        if self.in_fit:
            return  # GracefulStop ends the fit at the end of the step, after its checkpoint
        if self.is_preemption:
            self.requeue()
            return
        raise RunInterrupted(signum)

    @property
    def is_preemption(self) -> bool:
        return self._preempt is not None and self.signum == self._preempt[0]

    def requeue(self) -> None:
        """Hand a SLURM preemption signal to submitit's handler (it requeues the job and exits)."""
        if self._preempt is None or self._requeued:
            return
        self._requeued = True
        signum, handler = self._preempt
        log.warning("Handing %s to submitit: the job is requeued and resumes from its last checkpoint",
                    signal_name(signum))  # fmt: skip
        handler(signum, None)


def _submitit_preempt_signal() -> int | None:
    """The signal submitit requeues on, inside a job that submitit started (None elsewhere)."""
    if "SUBMITIT_EXECUTOR" not in os.environ and "SUBMITIT_FOLDER" not in os.environ:
        return None
    name = os.environ.get("SUBMITIT_PREEMPT_SIGNAL", "USR2")
    return getattr(signal, f"SIG{name}", getattr(signal, name, None))
