"""What every task shares: the network and the training step (from the chosen backend), the vocabulary and the
optimizer.

A task states once what is its own: its ``head`` (how logits come from the network), its ``objective`` (the loss
and its gradient, rnnlab.tasks.objectives), how a batch splits into network inputs and targets, and its metrics.
The backend (rnnlab.backends, chosen by ``model.backend``) supplies the rest: building the network, forward,
backward and the parameter update, checkpoint state, generation. No task module looks at which backend runs it.
"""

from __future__ import annotations

from typing import Any

import lightning as L
import torch

from rnnlab.backends import backend as backend_named
from rnnlab.data.vocab import CharVocab
from rnnlab.models.spec import NetSpec
from rnnlab.tasks.objectives import CrossEntropy

HEADS = ("final", "per_step", "network")


class RecurrentTask(L.LightningModule):
    """Base LightningModule. Its hyperparameters (spec, optimizer, task options, vocabulary, seed, backend,
    dtype, clipping) go into every checkpoint, so ``load_from_checkpoint`` rebuilds the model with no other input.

    A subclass declares:

    * ``head``: ``"final"`` (logits = head(last_hidden(final state)): one output per sequence), ``"per_step"``
      (logits = head(outputs) at every step) or ``"network"`` (the network ends in its own output layer:
      logits = net(*net_inputs));
    * ``objective``: a loss with a torch and a NumPy form (rnnlab.tasks.objectives);
    * ``net_inputs(batch)`` and ``batch_targets(batch)`` when the defaults ((inputs, lengths or None) and the last
      element) do not fit, and ``prediction_offset(x)`` for a term added to the head's output;
    * ``training_metrics`` and its evaluation (``validation_step`` / ``test_step``), on torch tensors;
    * for ``rnnlab-predict``: ``predict_input`` (``"lines"``: text lines, ``"csv"``: a table; None, the default:
      the command refuses the task's checkpoints) and ``predict_records(inputs)``, which turns them into the
      network's inputs with what the checkpoint holds, runs the model and returns one dict per output row
      (rnnlab.predict). ``predict_info``, the data module's ``predict_info()`` when it has one (its tokenizer,
      label names, target vocabulary, ...), is saved with every checkpoint for it.

    The backend (``self.backend``) runs the training step: with ``backend="torch"`` Lightning optimizes
    automatically (autograd, torch.optim, its own gradient clipping); with ``backend="numpy"`` the backend optimizes
    manually (the NumPy forward, the objective's NumPy gradient, the hand-written backward, the same clipping formula
    and a NumPy optimizer with torch.optim's formula). Both go through the same Lightning loop, logging, callbacks
    and checkpoints.
    """

    head: str = "final"
    objective: Any = CrossEntropy()
    spec_class: Any = NetSpec
    predict_input: str | None = None  # rnnlab-predict's input: "lines", "csv", or None (not supported)
    predict_format: str = "table"  # rnnlab-predict's default output format for this task

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
        weight_noise: float = 0.0,
        scheduler: dict[str, Any] | None = None,
        predict_info: dict[str, Any] | None = None,
    ):
        super().__init__()
        self.save_hyperparameters(logger=False)  # the run logs a flat, readable copy itself
        if self.head not in HEADS:
            raise ValueError(f"{type(self).__name__}.head must be one of {HEADS}, got {self.head!r}")
        self.spec = self.spec_class(**spec)
        self.vocab = CharVocab(vocab)
        self.backend = backend_named(backend)
        self.net = self.backend.build_network(self.spec, seed, dtype)
        self.automatic_optimization = self.backend.automatic_optimization

    def setup(self, stage: str) -> None:
        """Keep what the data module says about its data in the hyperparameters, so every checkpoint carries it:
        ``predict_info()`` (how new inputs are read) and, for a series (forecast, anomaly), ``series_info()`` (its
        columns and normalization, also kept as ``self.series``)."""
        datamodule = getattr(self.trainer, "datamodule", None) if self._trainer is not None else None
        if datamodule is not None and hasattr(datamodule, "predict_info"):
            self.hparams["predict_info"] = datamodule.predict_info()
        if datamodule is not None and hasattr(datamodule, "series_info"):
            self.series = datamodule.series_info()
            self.hparams["series"] = self.series

    def input_dtype(self) -> torch.dtype:
        """The dtype of the network's float inputs: its parameters' (torch) or its arrays' (NumPy)."""
        if self.backend == "numpy":
            return torch.float64 if str(self.hparams.get("dtype", "float32")) == "float64" else torch.float32
        return next(self.net.parameters()).dtype

    # ------------------------------------------------------------------------------------ what a batch holds
    def net_inputs(self, batch: Any) -> tuple[Any, ...]:
        """The network's inputs of a batch (torch tensors or None): (inputs, lengths or None) by default; a
        ``"network"`` head takes whatever its network's forward takes."""
        return self.analysis_inputs(batch)

    def batch_targets(self, batch: Any) -> torch.Tensor:
        """The targets the objective compares the logits with: the batch's last element by default."""
        return batch[-1]

    def prediction_offset(self, x: torch.Tensor) -> torch.Tensor | None:
        """A term added to the head's output (a baseline the network corrects), or None."""
        return None

    # --------------------------------------------------------------------------------------------- steps
    def predict(self, inputs: tuple[Any, ...], state: Any = None) -> tuple[torch.Tensor, Any]:
        """Logits (a torch tensor for either backend; with autograd on the torch backend) and the final state."""
        return self.backend.predict(self, inputs, state)

    def begin_training_step(self, batch: Any, batch_idx: int) -> None:
        """What the task draws for a training step before its forward (seq2seq: the step's teacher-forcing
        choices); nothing by default. Called by ``training_step``, and by rnnlab-gradcheck before it takes the
        step's gradient on each backend."""

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        self.begin_training_step(batch, batch_idx)
        loss, logits, _ = self.backend.training_step(self, batch, batch_idx)
        self.log_training(batch, loss, logits)
        return loss

    def log_training(self, batch: Any, loss: torch.Tensor, logits: torch.Tensor | None) -> None:
        """train/loss and the task's ``training_metrics``, every step."""
        n = self.batch_size_of(batch)
        self.log("train/loss", loss, prog_bar=True, batch_size=n)
        for name, value in self.training_metrics(batch, loss, logits).items():
            self.log(f"train/{name}", value, batch_size=n)

    def training_metrics(self, batch: Any, loss: torch.Tensor, logits: torch.Tensor | None) -> dict[str, Any]:
        """Metrics of a training batch besides the loss (name -> value), from the step's logits."""
        return {}

    def on_train_batch_start(self, batch: Any, batch_idx: int) -> None:
        self.backend.on_train_batch_start(self)

    def on_after_backward(self) -> None:
        self.backend.on_after_backward(self)

    def configure_optimizers(self) -> Any:
        """The backend's optimizer and learning-rate schedule (``scheduler``: conf/scheduler/*.yaml)."""
        return self.backend.configure_optimizers(self)

    def configure_callbacks(self) -> list[Any]:
        """scheduler=plateau: the callback that hands each validation's ``task.monitor`` to the schedule."""
        scheduler = self.hparams.get("scheduler") or {}
        if scheduler.get("name") != "plateau":
            return []
        from rnnlab.callbacks import ScheduleOnValidation

        if any(isinstance(c, ScheduleOnValidation) for c in self.trainer.callbacks):
            return []  # attached by the fit already (the test after it asks again)
        return [ScheduleOnValidation(str(self.hparams.task["monitor"]))]

    # ----------------------------------------------------------------------------------------- checkpoints
    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        self.backend.on_save_checkpoint(self, checkpoint)

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        self.backend.on_load_checkpoint(self, checkpoint)

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

    def token_embeddings(self, weights: dict[str, Any]) -> list[tuple[str, Any, list[str]]]:
        """(tag, matrix [V, D], the V tokens) for each token table of the network, from ``weights`` (float64 arrays
        by torch's names, ``Backend.weights``): what rnnlab.projector shows. ``embedding.weight`` when the network
        has an embedding; with one-hot inputs the columns of the first layer's ``weight_ih_l0`` (and of
        ``weight_ih_l0_reverse``, appended), which is what each token adds to the pre-activations; none for float
        inputs."""
        import numpy as np

        spec, tokens = self.spec, list(self.vocab.itos)
        if spec.input_features > 0 or not tokens:
            return []
        if spec.has_embedding:
            return [("embedding", weights["embedding.weight"], tokens)]
        names = ["rnn.weight_ih_l0", *(["rnn.weight_ih_l0_reverse"] if spec.bidirectional else [])]
        return [("input_weights", np.concatenate([weights[n].T for n in names], axis=1), tokens)]
