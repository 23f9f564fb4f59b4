"""What every task shares: the network (from the chosen backend), the vocabulary and the optimizer."""

from __future__ import annotations

from typing import Any

import lightning as L
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


class RecurrentTask(L.LightningModule):
    """Base LightningModule. Its hyperparameters (spec, optimizer, task options, vocabulary, seed, backend) go
    into every checkpoint, so ``load_from_checkpoint`` rebuilds the model with no other input."""

    def __init__(
        self,
        spec: dict[str, Any],
        optimizer: dict[str, Any],
        task: dict[str, Any],
        vocab: list[str],
        seed: int,
        backend: str = "torch",
    ):
        super().__init__()
        self.save_hyperparameters(logger=False)  # the run logs a flat, readable copy itself
        self.spec = NetSpec(**spec)
        self.vocab = CharVocab(vocab)
        self.net = build_network(self.spec, seed, backend)

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return build_optimizer(self.parameters(), self.hparams.optimizer)

    @staticmethod
    def batch_size_of(batch: Any) -> int:
        return int(batch[0].shape[0])

    @staticmethod
    def tokens_of(batch: Any) -> int:
        return int(batch[0].numel())
