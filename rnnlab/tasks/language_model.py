"""task=language_model: next-character prediction, with temperature sampling."""

from __future__ import annotations

import math
from typing import Any

import torch
from lightning.pytorch.loggers import TensorBoardLogger
from lightning.pytorch.utilities import rank_zero_only
from torch.nn import functional as F
from torchmetrics import MeanMetric

from rnnlab.tasks.base import RecurrentTask

LN2 = math.log(2.0)


class LanguageModelTask(RecurrentTask):
    """Logs train/loss (nats per char), train/bpc and, per evaluation, {val,test}/loss, /bpc and /ppl.

    Evaluation losses are averaged over every predicted character of the split (not over batches); bits per
    character is loss / ln 2 and perplexity exp(loss). After each validation a sample is generated and logged
    as TensorBoard text (tag ``samples/generated``).
    """

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        if self.spec.bidirectional:
            raise ValueError("a bidirectional language model would see the characters it predicts")
        self.nll = torch.nn.ModuleDict({"val": MeanMetric(), "test": MeanMetric()})
        self.last_sample: str | None = None

    def forward(self, x: torch.Tensor, state: Any = None) -> tuple[torch.Tensor, Any]:
        out, state = self.net(x, state=state)
        return self.net.head(out), state

    def _loss(self, batch: Any) -> torch.Tensor:
        x, y = batch
        logits, _ = self(x)
        return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), y.reshape(-1))

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        loss = self._loss(batch)
        n = len(batch[0])
        self.log("train/loss", loss, prog_bar=True, batch_size=n)
        self.log("train/bpc", loss / LN2, batch_size=n)
        return loss

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        self.nll["val"].update(self._loss(batch), weight=batch[1].numel())

    def test_step(self, batch: Any, batch_idx: int) -> None:
        self.nll["test"].update(self._loss(batch), weight=batch[1].numel())

    def _log_split(self, stage: str) -> None:
        nll = self.nll[stage].compute()
        self.nll[stage].reset()
        self.log(f"{stage}/loss", nll, prog_bar=stage == "val")
        self.log(f"{stage}/bpc", nll / LN2, prog_bar=True)
        self.log(f"{stage}/ppl", torch.exp(nll))

    def on_validation_epoch_end(self) -> None:
        self._log_split("val")
        if not self.trainer.sanity_checking:
            self._log_sample()

    def on_test_epoch_end(self) -> None:
        self._log_split("test")

    @rank_zero_only
    def _log_sample(self) -> None:
        t = self.hparams.task
        if t.get("sample_length", 0) <= 0:
            return
        text = self.generate(t.get("sample_prompt", ""), t["sample_length"], t["temperature"], t.get("top_k"))
        self.last_sample = text
        for logger in self.loggers:
            if isinstance(logger, TensorBoardLogger):
                # four-space indentation makes TensorBoard's markdown keep the line breaks
                body = "    " + text.replace("\n", "\n    ")
                logger.experiment.add_text("samples/generated", body, global_step=self.global_step)

    @torch.no_grad()
    def generate(
        self, prompt: str = "", length: int = 300, temperature: float = 0.8, top_k: int | None = None, seed: int = 0
    ) -> str:
        """Sample ``length`` characters after ``prompt`` ("" starts from a newline), one step at a time."""
        if temperature <= 0:
            raise ValueError("temperature must be > 0")
        was_training = self.training
        self.eval()
        generator = torch.Generator().manual_seed(seed)
        context = prompt or ("\n" if "\n" in self.vocab.stoi else self.vocab.itos[0])
        x = torch.as_tensor(self.vocab.encode(context), device=self.device)[None]
        logits, state = self(x)
        out: list[int] = []
        for _ in range(length):
            scores = logits[0, -1].double().cpu() / temperature
            if top_k is not None and top_k < scores.numel():
                kth = torch.topk(scores, top_k).values[-1]
                scores = scores.masked_fill(scores < kth, float("-inf"))
            nxt = int(torch.multinomial(torch.softmax(scores, -1), 1, generator=generator))
            out.append(nxt)
            logits, state = self(torch.tensor([[nxt]], device=self.device), state)
        self.train(was_training)
        return prompt + self.vocab.decode(out)
