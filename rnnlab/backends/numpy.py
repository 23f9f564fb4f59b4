"""model.backend=numpy: the NumPy network from scratch, end to end, under Lightning's manual optimization.

A training step: the network's forward with its cache (dropout on), the task's head, the objective's NumPy loss
and gradient of the logits, that gradient scaled by 1/k when k batches accumulate, the head's and the network's
hand-written backward into ``net.grads``, then (on the last batch of a group) the divergence guard's checks,
clipping with torch's formula and a NumPy optimizer with torch.optim's formula. ``NumpyOptimizer`` presents that
optimizer to Lightning, so the loop, logging, callbacks and checkpoints are the same as for torch; the arrays go
into the checkpoint's ``numpy_backend`` entry.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import torch

from rnnlab.backends import Backend
from rnnlab.models.regularisers import step_seed


def arrays_to_tensors(obj: Any) -> Any:
    """NumPy arrays inside nested dicts/lists as torch tensors (sharing memory), so that checkpoints load with
    torch.load(weights_only=True), as Lightning does when it restores the best checkpoint."""
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


def copy_state(state: Any) -> Any:
    """A NumPy state (array, or a tuple (h, c, ...)) copied out of the network's work arrays."""
    if state is None:
        return None
    return tuple(np.array(s, copy=True) for s in state) if isinstance(state, tuple) else np.array(state, copy=True)


class NumpyOptimizer(torch.optim.Optimizer):
    """Presents a NumPy optimizer to Lightning as a torch optimizer, so that manual optimization counts its
    steps (``global_step``, ``max_steps``, logging intervals), LearningRateMonitor reads its learning rate, and
    checkpoints save and restore its state through the usual ``state_dict`` / ``load_state_dict``.

    Its single param group holds a placeholder tensor that is never used; the NumPy optimizer updates the
    network's NumPy arrays with the NumPy gradients. With a learning-rate ``schedule``
    (rnnlab.models.numpy.schedules; Lightning steps no scheduler under manual optimization), the group's ``lr`` is
    the schedule's: its first value from the start, the next after each step (a per-step schedule) or after each
    validation (:meth:`observe`), as torch's scheduler writes its optimizer's group; its state is saved with the
    optimizer's.
    """

    def __init__(self, numpy_optimizer: Any, grads: dict[str, Any], schedule: Any = None):
        self.numpy_optimizer = numpy_optimizer
        self.grads = grads
        self.schedule = schedule
        placeholder = torch.nn.Parameter(torch.zeros(()), requires_grad=False)
        lr = numpy_optimizer.lr if schedule is None else schedule.start(numpy_optimizer.lr)
        super().__init__([placeholder], {"lr": lr})

    @torch.no_grad()
    def step(self, closure: Any = None) -> Any:  # type: ignore[override]
        loss = closure() if closure is not None else None
        group = self.param_groups[0]
        self.numpy_optimizer.lr = group["lr"]  # a scheduler may have changed it
        self.numpy_optimizer.step(self.grads)
        if self.schedule is not None and self.schedule.per_step:
            group["lr"] = self.schedule.step(group["lr"])
        return loss

    def observe(self, value: float) -> None:
        """A validation's monitored value, for a schedule that follows it (scheduler=plateau)."""
        if self.schedule is not None and not self.schedule.per_step:
            self.param_groups[0]["lr"] = self.schedule.observe(self.param_groups[0]["lr"], value)

    def zero_grad(self, set_to_none: bool = True) -> None:
        for g in self.grads.values():
            g.fill(0.0)

    def state_dict(self) -> dict[str, Any]:  # type: ignore[override]
        state = {"numpy": arrays_to_tensors(self.numpy_optimizer.state_dict()), "lr": self.param_groups[0]["lr"]}
        if self.schedule is not None:
            state["schedule"] = self.schedule.state_dict()
        return state

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:  # type: ignore[override]
        self.numpy_optimizer.load_state_dict(tensors_to_arrays(state_dict["numpy"]))
        self.param_groups[0]["lr"] = state_dict["lr"]
        if self.schedule is not None:
            if "schedule" not in state_dict:
                raise ValueError("the checkpoint's optimizer state has no learning-rate schedule")
            self.schedule.load_state_dict(state_dict["schedule"])


_NAMED_NUMPY_OPTIMIZERS: dict[str, type[NumpyOptimizer]] = {}


def named_numpy_optimizer(numpy_optimizer: Any, grads: dict[str, Any], schedule: Any = None) -> NumpyOptimizer:
    """A NumpyOptimizer whose class is named like the torch optimizer it mirrors ("SGD", "Adam", "Adagrad",
    "RMSprop"), so that LearningRateMonitor logs the same tag (``lr-Adam``, ...) for both backends."""
    name = type(numpy_optimizer).__name__
    cls = _NAMED_NUMPY_OPTIMIZERS.get(name)
    if cls is None:
        cls = type(name, (NumpyOptimizer,), {"__module__": __name__, "__qualname__": f"NumpyOptimizer.{name}"})
        _NAMED_NUMPY_OPTIMIZERS[name] = cls
    return cls(numpy_optimizer, grads, schedule)


class NumpyBackend(Backend):
    """The NumPy backend (see rnnlab.backends for the interface)."""

    name = "numpy"
    automatic_optimization = False  # the training step runs backward, clipping and the optimizer itself
    checks_divergence_itself = True  # ... and calls the divergence guard before clipping

    # ------------------------------------------------------------------------------------------- building
    def task_options(self, trainer_cfg: Any, float64: bool) -> dict[str, Any]:
        """The trainer settings the task applies itself: the dtype of its arrays, clipping and accumulation."""
        return dict(
            dtype="float64" if float64 else "float32",
            clip={"value": trainer_cfg.gradient_clip_val, "algorithm": trainer_cfg.gradient_clip_algorithm},
            accumulate_grad_batches=trainer_cfg.accumulate_grad_batches,
        )

    def build_network(self, spec: Any, seed: int, dtype: str = "float32") -> Any:
        from rnnlab.models.seq2seq_spec import Seq2SeqSpec

        if isinstance(spec, Seq2SeqSpec):
            from rnnlab.models.numpy.seq2seq import NumpySeq2Seq

            return NumpySeq2Seq(spec, seed, dtype=np.dtype(dtype))
        from rnnlab.models.numpy.net import NumpyRecurrentNet

        return NumpyRecurrentNet(spec, seed, dtype=np.dtype(dtype))

    def finish_build(self, task: Any, float64: bool, initial_arrays: Callable[[], dict[str, np.ndarray]]) -> None:
        """Nothing: the network was built in its dtype from the draws."""

    # -------------------------------------------------------------------------------------------- running
    def array(self, tensor: Any) -> Any:
        """A batch tensor as a NumPy array (None stays None)."""
        return None if tensor is None else tensor.cpu().numpy()

    def tensor(self, array: Any) -> torch.Tensor:
        """A NumPy output as a torch tensor sharing its memory (for the task's metric code)."""
        return torch.from_numpy(array)

    def _run(self, task: Any, inputs: tuple[Any, ...], state: Any, train: bool) -> tuple[Any, Any, Any, Any]:
        """Forward through the network and the task's head: (logits as the head gives them, final state,
        ``backward(dlogits)``, logits shaped for the task). ``train`` enables dropout."""
        net = task.net
        if task.head == "network":  # the network ends in its own output layer
            logits, cache = net.forward(*(self.array(t) for t in inputs), train=train)
            return logits, None, lambda dlogits: net.backward(dlogits, cache), logits
        x, lengths = (self.array(t) for t in inputs)
        out, final, cache = net.forward(x, lengths, state=state, train=train)
        if task.head == "final":  # logits = head(last_hidden(final state))
            logits, head_cache = net.head_forward(net.last_hidden(final))

            def backward(dlogits: np.ndarray) -> None:
                d_final = net.last_hidden_backward(net.head_backward(dlogits, head_cache))
                net.backward(None, d_final, cache)

            shape = logits.shape
        else:  # per step: the head on every step's output, flattened to [B * T, F]
            b, t, f = out.shape
            logits, head_cache = net.head_forward(out.reshape(b * t, f))

            def backward(dlogits: np.ndarray) -> None:
                net.backward(net.head_backward(dlogits, head_cache).reshape(b, t, f), None, cache)

            shape = (b, t, -1)
        offset = task.prediction_offset(inputs[0])
        if offset is not None:  # d(logits + offset)/d logits = 1: the gradient is unchanged
            logits = logits + self.array(offset).astype(logits.dtype)
        return logits, final, backward, logits.reshape(shape)

    def predict(self, task: Any, inputs: tuple[Any, ...], state: Any = None) -> tuple[torch.Tensor, Any]:
        """The task's logits as a torch tensor (no dropout) and the final state (NumPy; None for a network head)."""
        _, final, _, logits = self._run(task, inputs, state, train=False)
        return self.tensor(logits), final

    def loss(self, task: Any, batch: Any, state: Any = None) -> float:
        """The objective's NumPy loss of a batch from ``state`` (None: zeros), forward only, as
        ``loss_and_backward`` computes it (dropout on): what rnnlab-gradcheck's finite differences evaluate."""
        logits, _, _, _ = self._run(task, task.net_inputs(batch), state, train=True)
        return float(task.objective.numpy(logits, self.array(task.batch_targets(batch)))[0])

    def loss_and_backward(
        self, task: Any, batch: Any, scale: float = 1.0, state: Any = None
    ) -> tuple[float, torch.Tensor, Any]:
        """NumPy forward from ``state`` (None: zeros), the objective's NumPy loss and gradient, the gradient scaled
        by ``scale``, backward into ``task.net.grads`` (added to what is there). Returns the loss, the logits (a
        torch tensor, for the training metrics) and the final state. With a carried state, the gradient of the
        initial state that the network's backward returns is dropped: truncated BPTT."""
        logits, final, backward, shaped = self._run(task, task.net_inputs(batch), state, train=True)
        loss, dlogits = task.objective.numpy(logits, self.array(task.batch_targets(batch)))
        if scale != 1.0:
            dlogits *= scale
        backward(dlogits)
        return loss, self.tensor(shaped), final

    def training_step(self, task: Any, batch: Any, batch_idx: int, state: Any = None) -> tuple[Any, Any, Any]:
        """Manual optimization: NumPy forward, loss gradient and BPTT; clipping; NumPy optimizer step.

        With ``accumulate_grad_batches`` k, gradients of k batches (each scaled by 1/k, as Lightning does)
        are summed before a step; the last, possibly shorter, group of an epoch steps too.
        """
        from rnnlab.callbacks import divergence_guard, gradient_norm_logger, numpy_grad_norm
        from rnnlab.models.numpy.optim import clip_gradients

        k = int(task.hparams.accumulate_grad_batches)
        optimizer = task.optimizers()
        if batch_idx % k == 0:
            optimizer.zero_grad()
        std = self.weight_noise(task)  # rnnlab.models.weight_noise: the forward and backward on noisy weights
        clean = None
        if std > 0:
            from rnnlab.models.weight_noise import add_numpy

            seed, step, rank = int(task.hparams.seed), int(task.global_step), int(task.global_rank)
            clean = add_numpy(task.net.params, std, seed, step, rank)
        try:
            loss, logits, final = self.loss_and_backward(task, batch, scale=1.0 / k, state=state)
        finally:
            if clean is not None:
                from rnnlab.models.weight_noise import restore_numpy

                restore_numpy(task.net.params, clean)
        trainer = task._trainer
        guard = divergence_guard(trainer)  # NaN/Inf check of the loss and the unclipped gradient norm
        if guard is not None and guard.check_loss:
            guard.check(trainer, "train/loss", float(loss), batch_idx)
        last_batch = task.trainer.is_last_batch if trainer is not None else False
        if (batch_idx + 1) % k == 0 or last_batch:
            grads = task.net.grads
            clip = task.hparams.clip or {}
            value, algorithm = clip.get("value"), clip.get("algorithm") or "norm"
            by_norm = value is not None and float(value) > 0 and str(algorithm).lower() == "norm"
            norm = None
            recorder = gradient_norm_logger(trainer)  # callbacks.grad_norm: logs the norm before clipping
            wanted = recorder is not None or (guard is not None and guard.check_gradients)
            if wanted and not by_norm:  # value clipping clamps an Inf away: the norm is taken before it
                norm = numpy_grad_norm(grads)
            if value is not None:
                total = clip_gradients(grads, value, algorithm)
                norm = total if by_norm else norm  # clipping by norm returns the norm before clipping
            if recorder is not None and norm is not None:
                recorder.record(trainer, task, norm)
            if guard is not None and guard.check_gradients and norm is not None:
                guard.check(trainer, "gradient norm", norm, batch_idx)
            optimizer.step()
        dtype = torch.float64 if task.net.dtype.itemsize == 8 else torch.float32
        return torch.tensor(loss, dtype=dtype), logits, final

    def configure_optimizers(self, task: Any) -> NumpyOptimizer:
        """The NumPy optimizer and its learning-rate schedule (rnnlab.models.numpy.schedules, torch's formulas),
        which the optimizer steps itself: under manual optimization Lightning steps no scheduler."""
        from rnnlab.backends import schedule_horizon
        from rnnlab.models.numpy.optim import build_optimizer
        from rnnlab.models.numpy.schedules import build_schedule

        net = task.net
        optimizer = build_optimizer(net.params, task.hparams.optimizer)
        scheduler = task.hparams.get("scheduler") or {"name": "none"}
        horizon = None
        if scheduler.get("name") == "cosine":
            horizon = schedule_horizon(task, int(task.hparams.accumulate_grad_batches))
        mode = str((task.hparams.task or {}).get("mode", "min"))
        return named_numpy_optimizer(optimizer, net.grads, build_schedule(scheduler, optimizer.lr, horizon, mode))

    def observe_validation(self, task: Any, value: float) -> None:
        """scheduler=plateau: the monitored value of a validation that just ended."""
        task.trainer.optimizers[0].observe(value)

    def on_train_batch_start(self, task: Any) -> None:
        """The network's dropout generator is its own (and in the checkpoint); the masks inside the recurrence
        (rnnlab.models.regularisers) start from (seed, step, rank), as the torch backend's."""
        if getattr(task.net, "masks", None) is not None:
            seed = int(task.hparams.seed)
            task.net.masks.reseed(step_seed(seed, int(task.global_step), int(task.global_rank)))

    # ------------------------------------------------------------------------------ checkpoints and state
    def on_save_checkpoint(self, task: Any, checkpoint: dict[str, Any]) -> None:
        checkpoint["numpy_backend"] = arrays_to_tensors(task.net.state_dict())

    def on_load_checkpoint(self, task: Any, checkpoint: dict[str, Any]) -> None:
        if "numpy_backend" not in checkpoint:
            raise ValueError("this checkpoint was not written by the NumPy backend (no 'numpy_backend' entry)")
        task.net.load_state_dict(tensors_to_arrays(checkpoint["numpy_backend"]))

    def state_in(self, task: Any, state: Any) -> Any:
        return state

    def carried(self, state: Any) -> Any:
        """The final state to carry into the next batch: a copy out of the network's work arrays (NumPy arrays
        have no history; the backward stops at the window's start by construction)."""
        return copy_state(state)

    def state_to_checkpoint(self, state: Any) -> Any:
        return arrays_to_tensors(copy_state(state))

    def state_from_checkpoint(self, state: Any) -> Any:
        state = tensors_to_arrays(state)
        return tuple(state) if isinstance(state, list | tuple) else state

    # ----------------------------------------------------------------------------------------- generation
    def prompt(self, net: Any, ids: Any) -> tuple[np.ndarray, Any]:
        """Run a prompt (token ids, batch 1): the last position's logits (float64 [V]) and the final state."""
        logits, state = net.forward_logits_last(ids)
        return np.array(logits, dtype=np.float64), state

    def step(self, net: Any, token: int, state: Any) -> tuple[np.ndarray, Any]:
        """One token from ``state`` with the network's batch-1 fast path: logits (float64 [V]) and the new state."""
        logits, state = net.step(token, state)
        return np.array(logits, dtype=np.float64), state

    # ----------------------------------------------------------------------------------------- inspection
    def weights(self, net: Any) -> dict[str, np.ndarray]:
        return {name: np.array(p, dtype=np.float64) for name, p in net.params.items()}

    def gradients(self, net: Any) -> Iterator[tuple[str, np.ndarray]]:
        for name, g in net.grads.items():
            yield name, np.asarray(g)

    def count_parameters(self, task: Any) -> int:
        return int(sum(p.size for p in task.net.params.values()))
