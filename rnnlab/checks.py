"""The checks a run makes before and around its fit, each ending in one line that names the key or the file:
the checkpoint to resume (a file torch can read, written by this backend, task, optimizer and network), the data
file, the validation interval, the monitored metric, the sample prompt, and Lightning's own complaints about the
trainer's settings. Only :func:`load_checkpoint` imports torch."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from rnnlab.errors import ConfigError


def check_inputs(cfg: DictConfig) -> None:
    """Checks that read the disk but need no torch: the checkpoint to resume and the data file."""
    if cfg.ckpt_path is not None:
        check_checkpoint_file(cfg.ckpt_path)
    if cfg.data.get("path") is not None:
        from rnnlab.data.token_cache import check_text

        check_text(cfg.data.path, cfg.paths.cache_dir)  # streamed; only the cheap checks once its tokens are cached


def check_checkpoint_file(ckpt_path: str) -> None:
    """``ckpt_path`` is a file that can hold a torch checkpoint (a zip archive, as torch.save writes, or a legacy
    pickle); one line otherwise. Reads 4 bytes, no torch."""
    p = Path(ckpt_path).expanduser()
    if p.is_dir():
        raise ConfigError(f"ckpt_path: a directory, not a checkpoint file: {p}")
    if not p.is_file():
        raise ConfigError(f"ckpt_path: no such checkpoint file: {p}")
    try:
        with p.open("rb") as fh:
            head = fh.read(4)
    except OSError as err:
        raise ConfigError(f"ckpt_path: cannot read {p}: {err.strerror or err}") from err
    if not head:
        raise ConfigError(f"ckpt_path: the file is empty: {p}")
    if not (head == b"PK\x03\x04" or head[:1] == b"\x80"):
        raise ConfigError(f"ckpt_path: not a checkpoint (not a torch.save archive): {p}")


def load_checkpoint(ckpt_path: str) -> dict[str, Any]:
    """A Lightning checkpoint, memory-mapped; one line for a file torch cannot read or that Lightning did not
    write."""
    import torch

    try:
        saved = torch.load(Path(ckpt_path).expanduser(), map_location="cpu", weights_only=False, mmap=True)
    except Exception as err:  # zip, pickle and mmap errors all mean "not a checkpoint"
        raise ConfigError(f"ckpt_path: not a checkpoint ({type(err).__name__}): {ckpt_path}") from err
    if not isinstance(saved, dict) or "state_dict" not in saved:
        raise ConfigError(f"ckpt_path: not a Lightning checkpoint: {ckpt_path}")
    return saved


def load_checkpoint_hparams(ckpt_path: str) -> dict[str, Any]:
    """The hyperparameters of a Lightning checkpoint (one-line errors as :func:`load_checkpoint`)."""
    return load_checkpoint(ckpt_path).get("hyper_parameters") or {}


def check_checkpoint_run(ckpt_path: str, cfg: DictConfig, saved: dict[str, Any] | None = None) -> None:
    """Before any data is loaded: the checkpoint was written by this backend, task and optimizer (the network
    itself is compared once it is built, :func:`check_checkpoint_matches`)."""
    hparams = (saved if saved is not None else load_checkpoint(ckpt_path)).get("hyper_parameters") or {}
    for key, theirs, ours in (
        ("model.backend", hparams.get("backend", "torch"), cfg.model.backend),
        ("task", (hparams.get("task") or {}).get("name"), cfg.task.name),
        ("optimizer", (hparams.get("optimizer") or {}).get("name"), cfg.optimizer.name),
    ):
        if theirs is not None and str(theirs) != str(ours):
            raise ConfigError(
                f"ckpt_path: the checkpoint was written by {key}={theirs}, this run uses {key}={ours}: {ckpt_path}"
            )


def check_checkpoint_matches(ckpt_path: str, model: Any) -> None:
    """A checkpoint of another network fails with one line that says what differs."""
    hparams = load_checkpoint_hparams(ckpt_path)
    if hparams.get("backend", "torch") != model.backend:
        raise ConfigError(
            f"ckpt_path: the checkpoint was written by model.backend={hparams.get('backend', 'torch')}, "
            f"this run uses model.backend={model.backend}: {ckpt_path}"
        )
    theirs, ours = hparams.get("spec"), model.spec.to_dict()
    if theirs is not None:  # keys added to NetSpec since the checkpoint was written take their defaults
        import dataclasses

        defaults = {f.name: f.default for f in dataclasses.fields(model.spec) if f.default is not dataclasses.MISSING}
        theirs = {**defaults, **theirs}
    if theirs is not None and theirs != ours:
        diff = ", ".join(
            f"{k}={theirs.get(k)} in the checkpoint but {v} here" for k, v in ours.items() if theirs.get(k) != v
        )
        raise ConfigError(f"ckpt_path: the checkpoint holds another network ({diff}): {ckpt_path}")


def check_val_interval(cfg: DictConfig, datamodule: Any) -> None:
    """An integer ``trainer.val_check_interval`` counts batches within an epoch (unless
    ``check_val_every_n_epoch=null``): it cannot exceed the epoch's training batches."""
    interval, every = cfg.trainer.val_check_interval, cfg.trainer.check_val_every_n_epoch
    if not isinstance(interval, int) or isinstance(interval, bool) or every is None:
        return
    try:
        batches = len(datamodule.train_dataloader())
    except (TypeError, NotImplementedError):  # a stream without a length
        return
    limit = cfg.trainer.limit_train_batches
    if isinstance(limit, int) and not isinstance(limit, bool):
        batches = min(batches, limit)
    elif isinstance(limit, float):
        batches = int(batches * limit)
    if interval > batches:
        raise ConfigError(
            f"trainer.val_check_interval={interval} is more than the {batches} training batches of an epoch of "
            f"data={cfg.data.name}; use at most {batches}, a fraction of the epoch (0.5), or "
            f"trainer.check_val_every_n_epoch=null to count batches across epochs"
        )


def check_early_stopping(cfg: DictConfig) -> None:
    """An EarlyStopping callback (``callbacks=early_stopping``) checks the monitored metric after validations: a
    run without any (``trainer.limit_val_batches=0``) would never stop early, silently."""
    limit = cfg.trainer.get("limit_val_batches")
    if limit is None or isinstance(limit, bool) or limit != 0:
        return
    for key, entry in (cfg.get("callbacks") or {}).items():
        if entry is not None and str(entry.get("_target_", "")).endswith(".EarlyStopping"):
            raise ConfigError(f"callbacks.{key}: early stopping watches task.monitor={cfg.task.monitor} after each "
                              "validation, and trainer.limit_val_batches=0 runs none")  # fmt: skip


def check_monitor(cfg: DictConfig, model: Any, datamodule: Any) -> None:
    """``task.monitor`` names a validation metric the task logs (a typo would end the first validation)."""
    monitor = str(cfg.task.monitor)
    names = model.validation_metrics(datamodule) if hasattr(model, "validation_metrics") else None
    if names is None:
        return
    logged = sorted(f"val/{n}" for n in names)
    if monitor.startswith("test/") or (monitor.startswith("val/") and monitor not in logged):
        raise ConfigError(
            f"task.monitor={monitor}: task={cfg.task.name} with data={cfg.data.name} never logs it during training; "
            f"it logs {', '.join(logged)}"
        )


def lightning_config_error(err: Exception, cfg: DictConfig) -> Exception:
    """Lightning's complaints about the trainer's settings that only the fit finds, as one line naming the key."""
    text = str(err).splitlines()[0] if str(err) else ""
    if "val_check_interval" in text:
        return ConfigError(f"trainer.val_check_interval: {text.replace('`', '')}")
    if "could not find the monitored key" in text:
        return ConfigError(f"task.monitor={cfg.task.monitor}: the task never logs it ({text.replace('`', '')})")
    if "Early stopping conditioned on metric" in text:  # no validation ran before the check (limit_val_batches=0)
        return ConfigError(f"callbacks.early_stopping: task.monitor={cfg.task.monitor} had no value when it checked; "
                           f"it needs a validation before it ({text.replace('`', '').split('. ')[0]})")  # fmt: skip
    return err


def check_prompt(cfg: DictConfig, datamodule: Any) -> None:
    """``task.sample_prompt`` uses only characters of the data's vocabulary."""
    prompt = cfg.task.get("sample_prompt") or ""
    unknown = [ch for ch in prompt if ch not in datamodule.vocab.stoi]
    if unknown:
        raise ConfigError(f"task.sample_prompt: character {unknown[0]!r} does not occur in data={cfg.data.name}")
