"""What every task shares: the network (from the chosen backend), the vocabulary and the optimizer."""

from __future__ import annotations

from typing import Any

import lightning as L
import numpy as np
import torch

from rnnlab.data.vocab import CharVocab
from rnnlab.models.factory import build_network
from rnnlab.models.spec import NetSpec

OPTIMIZERS = {"sgd": "SGD", "adam": "Adam", "adagrad": "Adagrad"}


def build_optimizer(params: Any, optimizer: dict[str, Any]) -> torch.optim.Optimizer:
    """torch.optim.{SGD, Adam, Adagrad} from the optimizer config (keys are the optimizer's arguments)."""
    kwargs = {k: v for k, v in optimizer.items() if k != "name"}
    if "betas" in kwargs:
        kwargs["betas"] = tuple(kwargs["betas"])
    return getattr(torch.optim, OPTIMIZERS[optimizer["name"]])(params, **kwargs)


def arrays_to_tensors(obj: Any) -> Any:
    """NumPy arrays inside nested dicts/lists as torch tensors (sharing memory), so that checkpoints load with
    torch.load(weights_only=True), as Lightning does when it restores the best checkpoint."""
    import numpy as np

    if isinstance(obj, np.ndarray):
        return torch.from_numpy(obj)
    if isinstance(obj, dict):
        return {k: arrays_to_tensors(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return type(obj)(arrays_to_tensors(v) for v in obj)
    return obj


def tensors_to_arrays(obj: Any) -> Any:
    """The inverse of ``arrays_to_tensors``."""
    if isinstance(obj, torch.Tensor):
        return obj.detach().cpu().numpy()
    if isinstance(obj, dict):
        return {k: tensors_to_arrays(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return type(obj)(tensors_to_arrays(v) for v in obj)
    return obj


class NumpyOptimizer(torch.optim.Optimizer):
    """Presents a NumPy optimizer to Lightning as a torch optimizer, so that manual optimization counts its
    steps (``global_step``, ``max_steps``, logging intervals), LearningRateMonitor reads its learning rate, and
    checkpoints save and restore its state through the usual ``state_dict`` / ``load_state_dict``.

    Its single param group holds a placeholder tensor that is never used; the NumPy optimizer updates the
    network's NumPy arrays with the NumPy gradients.
    """

    def __init__(self, numpy_optimizer: Any, grads: dict[str, Any]):
        self.numpy_optimizer = numpy_optimizer
        self.grads = grads
        placeholder = torch.nn.Parameter(torch.zeros(()), requires_grad=False)
        super().__init__([placeholder], {"lr": numpy_optimizer.lr})

    @torch.no_grad()
    def step(self, closure: Any = None) -> Any:  # type: ignore[override]
        loss = closure() if closure is not None else None
        self.numpy_optimizer.lr = self.param_groups[0]["lr"]  # a scheduler may have changed it
        self.numpy_optimizer.step(self.grads)
        return loss

    def zero_grad(self, set_to_none: bool = True) -> None:
        for g in self.grads.values():
            g.fill(0.0)

    def state_dict(self) -> dict[str, Any]:  # type: ignore[override]
        return {"numpy": arrays_to_tensors(self.numpy_optimizer.state_dict()), "lr": self.param_groups[0]["lr"]}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:  # type: ignore[override]
        self.numpy_optimizer.load_state_dict(tensors_to_arrays(state_dict["numpy"]))
        self.param_groups[0]["lr"] = state_dict["lr"]


_NAMED_NUMPY_OPTIMIZERS: dict[str, type[NumpyOptimizer]] = {}


def named_numpy_optimizer(numpy_optimizer: Any, grads: dict[str, Any]) -> NumpyOptimizer:
    """A NumpyOptimizer whose class is named like the torch optimizer it mirrors ("SGD", "Adam", "Adagrad"), so
    that LearningRateMonitor logs the same tag (``lr-Adam``, ...) for both backends."""
    name = type(numpy_optimizer).__name__
    cls = _NAMED_NUMPY_OPTIMIZERS.get(name)
    if cls is None:
        cls = type(name, (NumpyOptimizer,), {"__module__": __name__, "__qualname__": f"NumpyOptimizer.{name}"})
        _NAMED_NUMPY_OPTIMIZERS[name] = cls
    return cls(numpy_optimizer, grads)


def step_seed(seed: int, step: int, rank: int = 0) -> int:
    """A 63-bit seed for one training step of one process, from (seed, step, rank) alone."""
    return int(np.random.SeedSequence([seed % 2**63, step, rank]).generate_state(1, np.uint64)[0] >> 1)


class RecurrentTask(L.LightningModule):
    """Base LightningModule. Its hyperparameters (spec, optimizer, task options, vocabulary, seed, backend,
    dtype, clipping) go into every checkpoint, so ``load_from_checkpoint`` rebuilds the model with no other input.

    Backends: with ``backend="torch"`` Lightning optimizes automatically (autograd, torch.optim, its own gradient
    clipping). With ``backend="numpy"`` the task optimizes manually: ``numpy_loss_and_backward`` (defined by each
    task) runs the NumPy forward, loss and hand-written backward; then the same clipping formula and a NumPy
    optimizer with torch.optim's formula update the arrays. Both go through the same Lightning loop, logging,
    callbacks and checkpoints.
    """

    def __init__(
        self,
        spec: dict[str, Any],
        optimizer: dict[str, Any],
        task: dict[str, Any],
        vocab: list[str],
        seed: int,
        backend: str = "torch",
        dtype: str = "float32",
        clip: dict[str, Any] | None = None,
        accumulate_grad_batches: int = 1,
    ):
        super().__init__()
        self.save_hyperparameters(logger=False)  # the run logs a flat, readable copy itself
        self.spec = NetSpec(**spec)
        self.vocab = CharVocab(vocab)
        self.backend = backend
        self.is_numpy = backend == "numpy"
        self.net = build_network(self.spec, seed, backend, dtype=dtype)
        if self.is_numpy:
            self.automatic_optimization = False
        self._pending_numpy_state: dict[str, Any] | None = None

    def on_train_batch_start(self, batch: Any, batch_idx: int) -> None:
        if not self.is_numpy:
            # torch's dropout draws from the global torch RNG, which a restart reseeds and which data loaders
            # also draw from; seeding it from (seed, step, rank) makes every step's masks the same in a resumed
            # run as in an uninterrupted one. (The NumPy backend keeps its dropout RNG in the checkpoint.)
            torch.manual_seed(step_seed(int(self.hparams.seed), int(self.global_step), int(self.global_rank)))

    # ------------------------------------------------------------------------------------- optimizers
    def configure_optimizers(self) -> torch.optim.Optimizer:
        if self.is_numpy:
            from rnnlab.models.numpy.optim import build_optimizer as build_numpy_optimizer

            return named_numpy_optimizer(build_numpy_optimizer(self.net.params, self.hparams.optimizer), self.net.grads)
        return build_optimizer(self.parameters(), self.hparams.optimizer)

    def numpy_training_step(self, batch: Any, batch_idx: int) -> tuple[torch.Tensor, Any]:
        """Manual optimization: NumPy forward, loss gradient and BPTT; clipping; NumPy optimizer step.

        With ``accumulate_grad_batches`` k, gradients of k batches (each scaled by 1/k, as Lightning does)
        are summed before a step; the last, possibly shorter, group of an epoch steps too.
        """
        from rnnlab.callbacks import divergence_guard, numpy_grad_norm
        from rnnlab.models.numpy.optim import clip_gradients

        k = int(self.hparams.accumulate_grad_batches)
        optimizer = self.optimizers()
        first_of_group = batch_idx % k == 0
        if first_of_group:
            optimizer.zero_grad()
        loss, aux = self.numpy_loss_and_backward(batch, scale=1.0 / k)
        guard = divergence_guard(self._trainer)  # NaN/Inf check of the loss and the unclipped gradient norm
        if guard is not None and guard.check_loss:
            guard.check(self._trainer, "train/loss", float(loss), batch_idx)
        last_batch = self.trainer.is_last_batch if self.trainer is not None else False
        if (batch_idx + 1) % k == 0 or last_batch:
            clip = self.hparams.clip or {}
            value, algorithm = clip.get("value"), clip.get("algorithm") or "norm"
            by_norm = value is not None and float(value) > 0 and str(algorithm).lower() == "norm"
            norm = None
            if guard is not None and guard.check_gradients and not by_norm:  # value clipping clamps an Inf away
                norm = numpy_grad_norm(self.net.grads)
            if value is not None:
                total = clip_gradients(self.net.grads, value, algorithm)
                norm = total if by_norm else norm  # clipping by norm returns the norm before clipping
            if guard is not None and guard.check_gradients and norm is not None:
                guard.check(self._trainer, "gradient norm", norm, batch_idx)
            optimizer.step()
        return torch.tensor(loss, dtype=torch.float64 if self.net.dtype.itemsize == 8 else torch.float32), aux

    def numpy_loss_and_backward(self, batch: Any, scale: float = 1.0) -> tuple[float, Any]:
        """NumPy forward, loss, and backward into ``self.net.grads`` (gradients scaled by ``scale``).
        Returns the loss and whatever the task needs for its training metrics."""
        raise NotImplementedError(f"{type(self).__name__} does not define its NumPy step")

    # ------------------------------------------------------------------------------ numpy checkpoints
    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        if self.is_numpy:
            checkpoint["numpy_backend"] = arrays_to_tensors(self.net.state_dict())

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        if self.is_numpy:
            if "numpy_backend" not in checkpoint:
                raise ValueError("this checkpoint was not written by the NumPy backend (no 'numpy_backend' entry)")
            self.net.load_state_dict(tensors_to_arrays(checkpoint["numpy_backend"]))

    @staticmethod
    def analysis_inputs(batch: Any) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(inputs [B, T, ...], lengths [B] or None) of a batch, for rnnlab.analysis. The default reads
        (inputs, lengths, targets) batches and (inputs, targets) batches; tasks with other layouts override it."""
        if len(batch) == 3 and batch[1].ndim == 1 and not batch[1].is_floating_point():
            return batch[0], batch[1]
        return batch[0], None

    @staticmethod
    def batch_size_of(batch: Any) -> int:
        return int(batch[0].shape[0])

    def validation_metrics(self, datamodule: Any) -> set[str]:
        """The names (without ``val/``) of the metrics this task logs at every validation with this data: what
        ``task.monitor`` may name (checked before training)."""
        return {"loss"}

    @staticmethod
    def tokens_of(batch: Any) -> int:
        return int(batch[0].numel())
