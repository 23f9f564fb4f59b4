"""task=regress: sequence -> one real number (or a few) from the final hidden state, trained with MSE.

Model: y_hat = W h_T + b, with h_T the top layer's final hidden state (both directions' final states
concatenated when bidirectional: ``last_hidden``) and a head of ``num_outputs`` units (1 on data=adding).
Loss: MSE = 1/(B K) sum_{b,k} (y_hat_bk - y_bk)^2, the mean over the batch and the outputs (F.mse_loss and
rnnlab.models.numpy.losses.mse). Evaluation accumulates the same mean over a whole split in float64
(torchmetrics' MeanSquaredError), logged as {val,test}/mse (= {val,test}/loss); the monitor is val/mse, min.
"""

from __future__ import annotations

from typing import Any

import torch
from torchmetrics import MeanSquaredError

from rnnlab.tasks.base import RecurrentTask
from rnnlab.tasks.objectives import MSE


class RegressTask(RecurrentTask):
    """Logs train/loss (MSE), {val,test}/mse and {val,test}/mse_baseline: the MSE of always predicting the training
    targets' mean, taken from the data module (the adding problem's 0.167), so a curve can be read against it."""

    head = "final"
    objective = MSE()

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.mse = torch.nn.ModuleDict({"val": MeanSquaredError(), "test": MeanSquaredError()})

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Predictions [B, num_outputs] for float inputs [B, T, F] (a torch tensor for either backend), with
        ``prediction_offset`` added."""
        return self.predict((x, None))[0]

    def _evaluate(self, batch: Any, stage: str) -> None:
        x, y = batch
        pred = self(x)
        self.mse[stage].update(pred.to(torch.float64), y.to(torch.float64))

    def validation_metrics(self, datamodule: Any) -> set[str]:
        baseline = getattr(datamodule, "baseline_mse", None) or {}
        return {"loss", "mse"} | ({"mse_baseline"} if "val" in baseline else set())

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        self._evaluate(batch, "val")

    def test_step(self, batch: Any, batch_idx: int) -> None:
        self._evaluate(batch, "test")

    def _log_split(self, stage: str) -> None:
        value = self.mse[stage].compute()  # torchmetrics adds up the processes of a multi-process run here
        self.mse[stage].reset()
        # sync_dist: the values are equal everywhere already; it tells Lightning so (and costs one all-reduce)
        self.log(f"{stage}/mse", value, prog_bar=True, sync_dist=True)
        self.log(f"{stage}/loss", value, sync_dist=True)
        baseline = getattr(self.trainer.datamodule, "baseline_mse", {}).get(stage)
        if baseline is not None:
            self.log(f"{stage}/mse_baseline", baseline, sync_dist=True)

    def on_validation_epoch_end(self) -> None:
        self._log_split("val")

    def on_test_epoch_end(self) -> None:
        self._log_split("test")
