"""model.backend=torch: torch networks (nn.RNN / nn.LSTM / nn.GRU, fused kernels), the objective's torch loss,
autograd and torch.optim under Lightning's automatic optimization (its own clipping and accumulation).

This module never imports the NumPy network (tests/test_layering.py): the task's objective is called through the
object the task holds.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import torch

from rnnlab.backends import Backend
from rnnlab.models.regularisers import step_seed

OPTIMIZERS = {"sgd": "SGD", "adam": "Adam", "adagrad": "Adagrad", "rmsprop": "RMSprop"}


def build_optimizer(params: Any, optimizer: dict[str, Any]) -> torch.optim.Optimizer:
    """torch.optim.{SGD, Adam, Adagrad, RMSprop} from the optimizer config (keys are the optimizer's arguments)."""
    kwargs = {k: v for k, v in optimizer.items() if k != "name"}
    if "betas" in kwargs:
        kwargs["betas"] = tuple(kwargs["betas"])
    return getattr(torch.optim, OPTIMIZERS[optimizer["name"]])(params, **kwargs)


def build_lr_scheduler(optimizer: torch.optim.Optimizer, scheduler: dict[str, Any], horizon: int | None,
                       mode: str = "min") -> Any:  # fmt: skip
    """torch.optim.lr_scheduler's object for a ``scheduler`` config (none: None): StepLR; CosineAnnealingLR over
    ``total_steps`` (or ``horizon``), after ``warmup_steps`` of LinearLR through SequentialLR; ReduceLROnPlateau
    in ``mode`` (task.mode)."""
    from torch.optim import lr_scheduler

    name = str(scheduler.get("name", "none"))
    if name == "none":
        return None
    if name == "step":
        return lr_scheduler.StepLR(optimizer, step_size=int(scheduler["step_size"]), gamma=float(scheduler["gamma"]))
    if name == "cosine":
        total = int(scheduler.get("total_steps") or horizon)
        warmup, eta_min = int(scheduler.get("warmup_steps") or 0), float(scheduler["eta_min"])
        if not warmup:
            return lr_scheduler.CosineAnnealingLR(optimizer, T_max=total, eta_min=eta_min)
        start = float(scheduler["warmup_start_factor"])
        warm = lr_scheduler.LinearLR(optimizer, start_factor=start, end_factor=1.0, total_iters=warmup)
        cosine = lr_scheduler.CosineAnnealingLR(optimizer, T_max=total - warmup, eta_min=eta_min)
        return lr_scheduler.SequentialLR(optimizer, [warm, cosine], milestones=[warmup])
    if name == "plateau":
        keys = ("factor", "patience", "threshold", "threshold_mode", "cooldown", "min_lr", "eps")
        return lr_scheduler.ReduceLROnPlateau(optimizer, mode=mode, **{key: scheduler[key] for key in keys})
    raise ValueError(f"scheduler.name={name}: none, step, cosine or plateau")


def detach_state(state: Any) -> Any:
    """A state (tensor, or a tuple (h, c, ...)) without autograd history: no graph into the previous batch."""
    if isinstance(state, torch.Tensor):
        return state.detach()
    if isinstance(state, tuple) and state and isinstance(state[0], torch.Tensor):
        return tuple(s.detach() for s in state)
    return state


class TorchBackend(Backend):
    """The torch backend (see rnnlab.backends for the interface)."""

    name = "torch"
    automatic_optimization = True  # Lightning runs backward, clipping, accumulation and the optimizer
    checks_divergence_itself = False  # the divergence guard checks in on_before_optimizer_step

    # ------------------------------------------------------------------------------------------- building
    def task_options(self, trainer_cfg: Any, float64: bool) -> dict[str, Any]:
        """Nothing beyond the common hyperparameters: Lightning applies the trainer's precision and clipping."""
        return {}

    def build_network(self, spec: Any, seed: int, dtype: str = "float32") -> Any:
        """A torch network in float32 (Lightning converts for other precisions; ``finish_build`` for float64)."""
        from rnnlab.models.seq2seq_spec import Seq2SeqSpec

        if isinstance(spec, Seq2SeqSpec):
            from rnnlab.models.torch.seq2seq import TorchSeq2Seq

            return TorchSeq2Seq(spec, seed)
        from rnnlab.models.torch.recurrent import TorchRecurrentNet

        return TorchRecurrentNet(spec, seed)

    def finish_build(self, task: Any, float64: bool, initial_arrays: Callable[[], dict[str, np.ndarray]]) -> None:
        """For a float64 run: convert before Lightning does, and copy the draws again, so the run starts from the
        exact float64 arrays (not their float32 roundings) and a resumed checkpoint loads into float64 parameters."""
        if float64:
            task.double()
            task.net.load_arrays(initial_arrays())

    # -------------------------------------------------------------------------------------------- running
    def array(self, tensor: Any) -> Any:
        return tensor

    def tensor(self, array: Any) -> Any:
        return array

    def _logits(self, task: Any, inputs: tuple[Any, ...], state: Any) -> tuple[torch.Tensor, Any]:
        net = task.net
        if task.head == "network":
            return net(*inputs), None
        x, lengths = inputs
        out, final = net(x, lengths, state=self.state_in(task, state))
        logits = net.head(net.last_hidden(final) if task.head == "final" else out)
        offset = task.prediction_offset(x)
        if offset is not None:
            logits = logits + offset.to(logits.dtype)
        return logits, final

    def predict(self, task: Any, inputs: tuple[Any, ...], state: Any = None) -> tuple[torch.Tensor, Any]:
        """The task's logits (with autograd when enabled) and the final state (None for a network head)."""
        return self._logits(task, inputs, state)

    def training_step(self, task: Any, batch: Any, batch_idx: int, state: Any = None) -> tuple[Any, Any, Any]:
        """Forward and the objective's torch loss; Lightning does the rest (backward, clipping, optimizer). With
        ``model.weight_noise`` the forward runs on noisy weights, which ``on_after_backward`` makes clean again."""
        std = self.weight_noise(task)
        if std > 0 and getattr(task, "_clean_weights", None) is None:
            from rnnlab.models.weight_noise import add_torch

            seed, step, rank = int(task.hparams.seed), int(task.global_step), int(task.global_rank)
            task._clean_weights = add_torch(task.net, std, seed, step, rank)
        try:
            logits, final = self._logits(task, task.net_inputs(batch), state)
            return task.objective.torch(logits, task.batch_targets(batch)), logits, final
        except BaseException:
            self.on_after_backward(task)  # no backward will follow: the clean weights now
            raise

    def on_after_backward(self, task: Any) -> None:
        """The clean weights back (weight noise), before clipping and the optimizer step."""
        clean = getattr(task, "_clean_weights", None)
        if clean is not None:
            from rnnlab.models.weight_noise import restore_torch

            restore_torch(task.net, clean)
            task._clean_weights = None

    def configure_optimizers(self, task: Any) -> Any:
        """torch.optim's optimizer; with a per-step schedule, Lightning's dict form (Lightning steps it after every
        optimizer step and checkpoints it). ReduceLROnPlateau is kept on the task and stepped after every
        validation by rnnlab.callbacks.ScheduleOnValidation, before that validation's checkpoint is written (Lightning
        would step it at the epoch's end, after the checkpoint, and skip that step in a resumed run)."""
        from rnnlab.backends import schedule_horizon

        optimizer = build_optimizer(task.parameters(), task.hparams.optimizer)
        scheduler = task.hparams.get("scheduler") or {"name": "none"}
        horizon = schedule_horizon(task, 1) if scheduler.get("name") == "cosine" else None
        mode = str((task.hparams.task or {}).get("mode", "min"))
        built = build_lr_scheduler(optimizer, scheduler, horizon, mode)
        if built is None:
            return optimizer
        if isinstance(built, torch.optim.lr_scheduler.ReduceLROnPlateau):
            task._plateau = built
            saved = getattr(task, "_plateau_state", None)
            if saved is not None:  # a resumed run: its checkpoint was read before the optimizer existed
                built.load_state_dict(saved)
            return optimizer
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": built, "interval": "step", "frequency": 1}}

    def observe_validation(self, task: Any, value: float) -> None:
        """scheduler=plateau: the monitored value of a validation that just ended."""
        task._plateau.step(value)

    def on_train_batch_start(self, task: Any) -> None:
        # torch's dropout draws from the global torch RNG, which a restart reseeds and which data loaders also draw
        # from; seeding it from (seed, step, rank) makes every step's masks the same in a resumed run as in an
        # uninterrupted one. (The NumPy backend keeps its dropout RNG in the checkpoint.)
        seed = step_seed(int(task.hparams.seed), int(task.global_step), int(task.global_rank))
        torch.manual_seed(seed)
        if getattr(task.net, "masks", None) is not None:  # variational dropout, zoneout: as the NumPy backend
            task.net.masks.reseed(seed)

    # ------------------------------------------------------------------------------ checkpoints and state
    def on_save_checkpoint(self, task: Any, checkpoint: dict[str, Any]) -> None:
        """The parameters are in Lightning's state_dict, a per-step scheduler in its ``lr_schedulers``;
        ReduceLROnPlateau's state goes into ``lr_plateau``."""
        plateau = getattr(task, "_plateau", None)
        if plateau is not None:
            checkpoint["lr_plateau"] = plateau.state_dict()

    def on_load_checkpoint(self, task: Any, checkpoint: dict[str, Any]) -> None:
        """Lightning loads the state_dict after this. A float64 run's checkpoint loaded into a module built anew in
        float32 (``load_from_checkpoint``: rnnlab-generate, evaluation) turns the module to float64 first, so that
        its weights are not rounded to float32. ReduceLROnPlateau's state is kept for configure_optimizers, which
        Lightning calls after this hook."""
        if "lr_plateau" in checkpoint:
            task._plateau_state = checkpoint["lr_plateau"]
            if getattr(task, "_plateau", None) is not None:
                task._plateau.load_state_dict(checkpoint["lr_plateau"])
        weights = [v for k, v in checkpoint.get("state_dict", {}).items() if k.startswith("net.")]
        if weights and weights[0].dtype == torch.float64 and task.net.head.weight.dtype != torch.float64:
            task.double()

    def state_in(self, task: Any, state: Any) -> Any:
        """A carried or restored state on the module's device and in its dtype."""
        if state is None:
            return None
        dtype = task.net.head.weight.dtype
        if isinstance(state, tuple):
            return tuple(s.to(task.device, dtype) for s in state)
        return state.to(task.device, dtype)

    def carried(self, state: Any) -> Any:
        """The final state to carry into the next batch: detached (the gradient stops at the window's start)."""
        return detach_state(state)

    def state_to_checkpoint(self, state: Any) -> Any:
        return tuple(s.detach().cpu().clone() for s in state) if isinstance(state, tuple) else state.cpu()

    def state_from_checkpoint(self, state: Any) -> Any:
        return state

    # ----------------------------------------------------------------------------------------- generation
    @torch.no_grad()
    def prompt(self, net: Any, ids: Any) -> tuple[np.ndarray, Any]:
        """Run a prompt (token ids, batch 1) through the network: the last position's logits (float64 [V]) and
        the final state."""
        x = torch.as_tensor(ids, device=net.head.weight.device)[None]
        out, state = net(x, state=None)
        return net.head(out)[0, -1].double().cpu().numpy(), state

    @torch.no_grad()
    def step(self, net: Any, token: int, state: Any) -> tuple[np.ndarray, Any]:
        """One token from ``state``: its logits (float64 [V]) and the new state."""
        out, state = net(torch.tensor([[token]], device=net.head.weight.device), state=state)
        return net.head(out)[0, -1].double().cpu().numpy(), state

    # ----------------------------------------------------------------------------------------- inspection
    def weights(self, net: Any) -> dict[str, np.ndarray]:
        return {name: p.detach().cpu().double().numpy() for name, p in net.named_parameters()}

    def gradients(self, net: Any) -> Iterator[tuple[str, np.ndarray]]:
        for name, p in net.named_parameters():
            if p.grad is not None:
                yield name, p.grad.detach().double().cpu().numpy()

    def count_parameters(self, task: Any) -> int:
        return int(sum(p.numel() for p in task.parameters()))
