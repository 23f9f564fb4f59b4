"""The two backends: what differs between NumPy from scratch and PyTorch, behind one interface.

A task (rnnlab/tasks/) states its head, its objective and its metrics once; the backend of ``model.backend``
builds the network and runs it:

* ``numpy`` (:class:`rnnlab.backends.numpy.NumpyBackend`): the NumPy network, forward with a cache, the objective's
  NumPy loss and gradient, the hand-written backward, clipping and a NumPy optimizer, all under Lightning's manual
  optimization; its arrays are saved in the checkpoint's ``numpy_backend`` entry;
* ``torch`` (:class:`rnnlab.backends.torch.TorchBackend`): the torch network (fused cells), the objective's torch
  loss, autograd and torch.optim under Lightning's automatic optimization.

``backend(name)`` imports the chosen module only when asked (this package imports nothing heavy), so a NumPy run
never needs the torch network's module and the torch backend never imports the NumPy network
(tests/test_layering.py).

The interface (each method takes the task module or its network; both backends hand torch tensors to the task's
metric code):

* ``name``, ``automatic_optimization``, ``checks_divergence_itself``;
* building: ``task_options(trainer_cfg, float64)`` (the task's extra hyperparameters), ``build_network(spec, seed,
  dtype)``, ``finish_build(task, float64, initial_arrays)``;
* running: ``array(tensor)`` and ``tensor(array)`` (batch tensors in the backend's own arrays and back),
  ``predict(task, inputs, state)`` -> (logits as a torch tensor, final state), ``training_step(task, batch,
  batch_idx, state)`` -> (loss tensor, logits tensor, final state), ``configure_optimizers(task)``,
  ``on_train_batch_start(task)``, ``on_after_backward(task)``;
* checkpoints and carried state: ``on_save_checkpoint`` / ``on_load_checkpoint``, ``state_in(task, state)``,
  ``carried(state)``, ``state_to_checkpoint(state)``, ``state_from_checkpoint(state)``;
* generation: ``prompt(net, ids)`` -> (logits float64 [V], state) and ``step(net, token, state)``;
* inspection: ``weights(net)`` (float64 arrays by torch's names), ``gradients(net)`` ((name, array) pairs),
  ``count_parameters(task)``.
"""

from __future__ import annotations

import importlib
from typing import Any

BACKENDS: dict[str, str] = {
    "numpy": "rnnlab.backends.numpy:NumpyBackend",
    "torch": "rnnlab.backends.torch:TorchBackend",
}

_instances: dict[str, Any] = {}


class Backend:
    """What both backends share: a name, by which a backend also compares equal to its name (so code that reads a
    task's ``backend`` as the config's string, ``task.backend == "numpy"``, keeps working)."""

    name: str = ""

    def __str__(self) -> str:
        return self.name

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Backend):
            return other.name == self.name
        if isinstance(other, str):
            return other == self.name
        return NotImplemented

    def __hash__(self) -> int:
        return hash(self.name)

    # Hooks the task forwards from Lightning; nothing by default.
    def on_after_backward(self, task: Any) -> None:
        """After Lightning's backward of a training step (automatic optimization only)."""

    @staticmethod
    def weight_noise(task: Any) -> float:
        """``model.weight_noise`` of the task (0: none; rnnlab.models.weight_noise)."""
        return float(task.hparams.get("weight_noise", 0.0) or 0.0)


def schedule_horizon(task: Any, accumulate: int) -> int:
    """The cosine schedule's horizon in optimizer steps: ``scheduler.total_steps``, or else the run's steps as
    Lightning estimates them (``trainer.max_steps``, or ``max_epochs`` x ceil(batches per epoch / accumulation),
    the smaller of the two). ``accumulate``: the batches the backend itself accumulates per step (the NumPy
    backend's; Lightning counts its own). One line naming the keys when there is none or the warm-up fills it."""
    import math

    from rnnlab.errors import ConfigError

    scheduler = dict(task.hparams.get("scheduler") or {})
    warmup = int(scheduler.get("warmup_steps") or 0)
    total = scheduler.get("total_steps")
    if total is None:
        trainer = task.trainer
        total = trainer.estimated_stepping_batches  # sets up the training data if need be
        batches = trainer.num_training_batches
        if accumulate > 1 and trainer.max_epochs != -1 and batches != float("inf"):
            total = math.ceil(batches / accumulate) * max(int(trainer.max_epochs), 1)
            total = min(total, trainer.max_steps) if trainer.max_steps != -1 else total
        if not (isinstance(total, int) or (isinstance(total, float) and math.isfinite(total))) or total < 1:
            raise ConfigError(
                "scheduler=cosine needs a horizon: this run has no bounded number of steps; set "
                "scheduler.total_steps or trainer.max_steps"
            )
        if warmup >= total:
            raise ConfigError(
                f"scheduler.warmup_steps={warmup} must be less than the run's {int(total)} optimizer steps (the "
                f"cosine's horizon); set scheduler.total_steps or train longer"
            )
    return int(total)


def backend(name: Any) -> Any:
    """The backend called ``name`` ("numpy" or "torch", or the config's enum member), imported on first use."""
    key = str(getattr(name, "value", name))
    found = _instances.get(key)
    if found is not None:
        return found
    target = BACKENDS.get(key)
    if target is None:
        raise ValueError(f"model.backend={key} is not available")
    module, _, attr = target.partition(":")
    found = _instances[key] = getattr(importlib.import_module(module), attr)()
    return found
