"""The training objectives, each stated once with its two forms: ``torch(logits, targets)`` -> the loss as a torch
tensor (autograd differentiates it), and ``numpy(logits, targets)`` -> (the loss as a float, its gradient with
respect to the logits), from rnnlab.models.numpy.losses (imported when the NumPy backend first asks for it).

The backend picks the form: the torch backend calls ``torch`` on the network's output; the NumPy backend calls
``numpy`` and runs its hand-written backward from the returned gradient. Both compute the same number (the losses'
definitions are in rnnlab.models.numpy.losses).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

IGNORE_INDEX = -100  # torch's default ignore_index: padding and unscored positions


@dataclass(frozen=True)
class CrossEntropy:
    """The mean softmax cross-entropy over the targets that are not ``ignore_index`` (classes on the logits' last
    axis; any leading axes are flattened)."""

    ignore_index: int = IGNORE_INDEX

    def torch(self, logits: Any, targets: Any) -> Any:
        from torch.nn import functional as F

        return F.cross_entropy(
            logits.reshape(-1, logits.shape[-1]), targets.reshape(-1), ignore_index=self.ignore_index
        )

    def numpy(self, logits: Any, targets: Any) -> tuple[float, Any]:
        from rnnlab.models.numpy.losses import cross_entropy

        return cross_entropy(logits, targets, ignore_index=self.ignore_index)


@dataclass(frozen=True)
class MSE:
    """The mean squared error over every element, the targets read in the prediction's shape (a forecast's
    [B, horizon, K] targets against the head's [B, horizon * K] outputs)."""

    def torch(self, pred: Any, targets: Any) -> Any:
        from torch.nn import functional as F

        return F.mse_loss(pred.reshape(targets.shape), targets.to(pred.dtype))

    def numpy(self, pred: Any, targets: Any) -> tuple[float, Any]:
        from rnnlab.models.numpy.losses import mse

        return mse(pred, targets.reshape(pred.shape))


@dataclass(frozen=True)
class BernoulliNLL:
    """Independent Bernoulli outputs (one per key of a piano roll): the negative log-likelihood summed over the
    keys (the last axis) and averaged over the scored steps, in nats per step. A step is scored unless its targets
    are negative (padding past a sequence's length carries -1 in every key: ``rnnlab.tasks.polyphonic``)."""

    def torch(self, logits: Any, targets: Any) -> Any:
        from torch.nn import functional as F

        z = logits.reshape(-1, logits.shape[-1])
        y = targets.reshape(-1, logits.shape[-1]).to(z.dtype)
        scored = y[:, 0] >= 0
        return F.binary_cross_entropy_with_logits(z[scored], y[scored], reduction="sum") / scored.sum()

    def numpy(self, logits: Any, targets: Any) -> tuple[float, Any]:
        from rnnlab.models.numpy.losses import bernoulli_nll

        return bernoulli_nll(logits, targets)
