"""Checkpoints that survive a crash: atomic writes, and a resumed run that keeps the crashed run's best model.

Imported by ``rnnlab.train.train`` only (it imports lightning).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch
from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO
from lightning.fabric.utilities.cloud_io import _is_local_file_protocol
from lightning.pytorch.callbacks import ModelCheckpoint

from rnnlab.errors import StorageError

log = logging.getLogger("rnnlab")


def os_error_in(err: BaseException | None) -> OSError | None:
    """The OSError behind ``err`` (itself, or in its chain of causes and contexts; torch.save reports a failed
    write as a RuntimeError whose context is the OSError), or None."""
    seen: set[int] = set()
    while err is not None and id(err) not in seen:
        seen.add(id(err))
        if isinstance(err, OSError) and err.errno is not None:
            return err
        err = err.__cause__ or err.__context__
    return None


class AtomicCheckpointIO(TorchCheckpointIO):
    """Writes a checkpoint to a temporary file next to its target, flushes it to disk, then renames it over the
    target: a process killed at any moment leaves either the previous complete file or the new complete file,
    never half of one. Remote (fsspec) paths go through Lightning's own writer."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path: Any, storage_options: Any | None = None) -> None:
        if storage_options is not None or not _is_local_file_protocol(str(path)):
            super().save_checkpoint(checkpoint, path, storage_options)
            return
        from rnnlab.atomic import atomic_file

        target = Path(path)
        try:
            with atomic_file(target, "wb", durable=True) as fh:
                torch.save(checkpoint, fh)
        except (OSError, RuntimeError) as err:
            cause = os_error_in(err)
            if cause is None:
                raise
            intact = f"; the previous {target.name} is intact" if target.is_file() else ""
            raise StorageError(
                cause.errno, f"cannot write the checkpoint {target}: {cause.strerror or cause}{intact}"
            ) from err


class ResumingModelCheckpoint(ModelCheckpoint):
    """``ModelCheckpoint`` whose last.ckpt always holds the latest state (every validation, every
    ``save_last_every_n_steps`` steps, the final step), and that, when a run resumes from a checkpoint of another
    run directory (a new Hydra run directory resuming ``ckpt_path=<old run>/checkpoints/last.ckpt``), keeps the
    old run's ranking: its best
    score, its top-k files and their scores. Lightning's own class keeps only ``best_model_path`` then, so the
    first validation after a resume would count as the best whatever its score, and the test split could be
    scored with another checkpoint than in an uninterrupted run.

    The other run's ranked checkpoints are copied (hard-linked where the file system allows) into this run's
    checkpoint directory, so a resumed run depends on no other directory: the run it continues may be moved or
    deleted meanwhile, and nothing there is ever changed or removed. Files that are gone already (a moved directory
    whose files are found next to the resumed checkpoint are used from there) drop out of the ranking with a
    warning; without a best checkpoint the test split is scored with the final weights.
    """

    def __init__(self, *args: Any, save_last_every_n_steps: int | None = None, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.save_last_every_n_steps = int(save_last_every_n_steps or 0)
        self._last_refreshed_step = -1
        self.resumed_from: str | None = None  # the checkpoint this run resumes (train() sets it)

    def save_last_now(self, trainer: Any) -> str | None:
        """Write last.ckpt for the current step now (the signal contract's checkpoint); its path, or None when this
        callback writes no last.ckpt."""
        self._refresh_last(trainer)
        return self.last_model_path or None

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
        # Another run's directory: its ranked checkpoints are copied into this run's own directory, so that this
        # run never depends on the other one still existing (it may be moved or deleted while this one runs).
        found = {path: self._find(path) for path in state_dict.get("best_k_models", {})}
        best = state_dict.get("best_model_path") or ""
        if best and best not in found:
            found[best] = self._find(best)
        copies = {old: self._copy_in(new) for old, new in found.items() if new is not None}
        missing = [old for old, new in found.items() if new is None]
        self.best_k_models = {copies[p]: v for p, v in state_dict.get("best_k_models", {}).items() if p in copies}
        if best in copies:
            self.best_model_path = copies[best]
            self.best_model_score = state_dict["best_model_score"]
        elif self.best_k_models:  # the best file is gone: the best of those that remain
            self.best_model_path = (min if self.mode == "min" else max)(self.best_k_models, key=self.best_k_models.get)
            self.best_model_score = self.best_k_models[self.best_model_path]
        else:
            self.best_model_path, self.best_model_score = "", None
        kth = state_dict.get("kth_best_model_path", "")
        self.kth_best_model_path = copies.get(kth, self.best_model_path)
        if self.best_k_models:
            self.kth_value = state_dict.get("kth_value", self.kth_value) if kth in copies else self.kth_value
        if missing:
            log.warning(
                "The resumed run's ranked checkpoint%s %s %s gone (moved or deleted): the ranking continues without %s",
                "s" if len(missing) > 1 else "",
                ", ".join(missing),
                "are" if len(missing) > 1 else "is",
                "them" if len(missing) > 1 else "it",
            )
        log.info("Resuming the checkpoint ranking of %s (best %s: %s)", theirs, self.monitor, self.best_model_score)

    def _find(self, path: str) -> Path | None:
        """A ranked checkpoint of the resumed run: where it was written, or next to the checkpoint being resumed
        (the run directory was moved, or the files copied elsewhere)."""
        recorded = Path(path)
        if recorded.is_file():
            return recorded
        if self.resumed_from:
            beside = Path(self.resumed_from).expanduser().parent / recorded.name
            if beside.is_file():
                return beside
        return None

    def _copy_in(self, source: Path) -> str:
        """Copy (hard-link where possible) ``source`` into this run's checkpoint directory; the copy's path."""
        from rnnlab.atomic import place

        target_dir = Path(self.dirpath) if self.dirpath else source.parent
        return str(place(source, target_dir / source.name))

    def _remove_checkpoint(self, trainer: Any, filepath: str) -> None:
        if self.dirpath is not None and Path(filepath).resolve().parent != Path(self.dirpath).resolve():
            return  # another run's file (the run this one resumed): leave it
        super()._remove_checkpoint(trainer, filepath)
