"""Checkpoints that survive a crash: atomic writes, and a resumed run that keeps the crashed run's best model.

Imported by ``rnnlab.train.train`` only (it imports lightning).
"""

from __future__ import annotations

import logging
import os
import secrets
from pathlib import Path
from typing import Any

import torch
from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO
from lightning.fabric.utilities.cloud_io import _is_local_file_protocol
from lightning.pytorch.callbacks import ModelCheckpoint

log = logging.getLogger("rnnlab")


class AtomicCheckpointIO(TorchCheckpointIO):
    """Writes a checkpoint to a temporary file next to its target, flushes it to disk, then renames it over the
    target: a process killed at any moment leaves either the previous complete file or the new complete file,
    never half of one. Remote (fsspec) paths go through Lightning's own writer."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path: Any, storage_options: Any | None = None) -> None:
        if storage_options is not None or not _is_local_file_protocol(str(path)):
            super().save_checkpoint(checkpoint, path, storage_options)
            return
        target = Path(path)
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(f".{target.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
        try:
            with tmp.open("wb") as fh:
                torch.save(checkpoint, fh)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, target)
        finally:
            tmp.unlink(missing_ok=True)
        try:  # the rename itself reaches the disk with the directory entry
            fd = os.open(target.parent, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        except OSError:
            pass


class ResumingModelCheckpoint(ModelCheckpoint):
    """``ModelCheckpoint`` whose last.ckpt always holds the latest state (every validation, every
    ``save_last_every_n_steps`` steps, the final step), and that, when a run resumes from a checkpoint of another
    run directory (a new Hydra run directory resuming ``ckpt_path=<old run>/checkpoints/last.ckpt``), keeps the
    old run's ranking: its best
    score, its top-k files and their scores. Lightning's own class keeps only ``best_model_path`` then, so the
    first validation after a resume would count as the best whatever its score, and the test split could be
    scored with another checkpoint than in an uninterrupted run.

    Files of the other directory are never deleted: a checkpoint that drops out of the top k there is left in
    place (and out of the ranking), so a resumed run never removes anything from the run it continues.
    """

    def __init__(self, *args: Any, save_last_every_n_steps: int | None = None, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.save_last_every_n_steps = int(save_last_every_n_steps or 0)
        self._last_refreshed_step = -1

    # ---------------------------------------------------------------------------------- last.ckpt
    def _refresh_last(self, trainer: Any) -> None:
        """Write last.ckpt for the current step (once per step), without counting as the step's top-k save: the
        validation at the same step still ranks its checkpoint."""
        from lightning.pytorch.trainer.states import TrainerFn

        if (
            not self.save_last
            or trainer.fast_dev_run
            or trainer.sanity_checking
            or trainer.state.fn != TrainerFn.FITTING
            or self._last_refreshed_step == trainer.global_step
        ):
            return
        kept = self._last_global_step_saved
        self._save_last_checkpoint(trainer, self._monitor_candidates(trainer))
        self._last_global_step_saved = kept
        self._last_refreshed_step = trainer.global_step

    def on_train_batch_end(self, trainer: Any, pl_module: Any, outputs: Any, batch: Any, batch_idx: int) -> None:
        """last.ckpt every ``save_last_every_n_steps`` steps (so a crash loses at most that many), and at the step
        that reaches ``trainer.max_steps``: the state inside the epoch, from which a resume continues exactly."""
        super().on_train_batch_end(trainer, pl_module, outputs, batch, batch_idx)
        step, every = trainer.global_step, self.save_last_every_n_steps
        if (every > 0 and step % every == 0) or 0 < trainer.max_steps <= step:
            self._refresh_last(trainer)

    def on_validation_end(self, trainer: Any, pl_module: Any) -> None:
        """Lightning refreshes last.ckpt at a validation only when the top k changed; here at every one."""
        super().on_validation_end(trainer, pl_module)
        self._refresh_last(trainer)

    # ---------------------------------------------------------------------------------- resuming
    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        theirs = state_dict.get("dirpath", self.dirpath)
        if theirs == self.dirpath:
            super().load_state_dict(state_dict)
            return
        self.best_model_score = state_dict["best_model_score"]
        self.kth_best_model_path = state_dict.get("kth_best_model_path", self.kth_best_model_path)
        self.kth_value = state_dict.get("kth_value", self.kth_value)
        self.best_k_models = state_dict.get("best_k_models", self.best_k_models)
        self.best_model_path = state_dict["best_model_path"]
        log.info("Resuming the checkpoint ranking of %s (best %s: %s)", theirs, self.monitor, self.best_model_score)

    def _remove_checkpoint(self, trainer: Any, filepath: str) -> None:
        if self.dirpath is not None and Path(filepath).resolve().parent != Path(self.dirpath).resolve():
            return  # another run's file (the run this one resumed): leave it
        super()._remove_checkpoint(trainer, filepath)
