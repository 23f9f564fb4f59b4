"""task=language_model: next-character prediction, with temperature sampling."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
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
        """Logits [B, T, V] (a torch tensor for either backend) and the final state (the backend's own type)."""
        if self.is_numpy:
            out, state, _ = self.net.forward(x.cpu().numpy(), state=state, train=False)
            b, t, f = out.shape
            logits, _ = self.net.head_forward(out.reshape(b * t, f))
            return torch.from_numpy(logits.reshape(b, t, -1)), state
        out, state = self.net(x, state=state)
        return self.net.head(out), state

    def _loss(self, batch: Any) -> torch.Tensor:
        x, y = batch
        logits, _ = self(x)
        return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), y.reshape(-1))

    def numpy_loss_and_backward(self, batch: Any, scale: float = 1.0) -> tuple[float, Any]:
        from rnnlab.models.numpy.losses import cross_entropy

        x, y = (t.cpu().numpy() for t in batch)
        net = self.net
        out, _, cache = net.forward(x, train=True)
        b, t, f = out.shape
        logits, head_cache = net.head_forward(out.reshape(b * t, f))
        loss, dlogits = cross_entropy(logits, y.reshape(-1))
        if scale != 1.0:
            dlogits *= scale
        d_out = net.head_backward(dlogits, head_cache).reshape(b, t, f)
        net.backward(d_out, None, cache)
        return loss, None

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        loss = self.numpy_training_step(batch, batch_idx)[0] if self.is_numpy else self._loss(batch)
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
        """Sample ``length`` characters after ``prompt`` ("" starts from a newline), one step at a time.

        Both backends share the sampler (``sample_next``, NumPy generator seeded with ``seed``), so equal
        networks give equal samples. The NumPy backend steps with its batch-1 fast path.
        """
        if temperature <= 0:
            raise ValueError("temperature must be > 0")
        rng = np.random.default_rng(seed)
        context = prompt or ("\n" if "\n" in self.vocab.stoi else self.vocab.itos[0])
        ids = self.vocab.encode(context)
        out: list[int] = []
        if self.is_numpy:
            logits, state = self.net.forward_logits_last(ids)
            for _ in range(length):
                nxt = sample_next(logits, temperature, top_k, rng)
                out.append(nxt)
                logits, state = self.net.step(nxt, state)
            return prompt + self.vocab.decode(out)
        was_training = self.training
        self.eval()
        x = torch.as_tensor(ids, device=self.device)[None]
        logits_t, state = self(x)
        for _ in range(length):
            nxt = sample_next(logits_t[0, -1].double().cpu().numpy(), temperature, top_k, rng)
            out.append(nxt)
            logits_t, state = self(torch.tensor([[nxt]], device=self.device), state)
        self.train(was_training)
        return prompt + self.vocab.decode(out)


def sample_next(logits: np.ndarray, temperature: float, top_k: int | None, rng: np.random.Generator) -> int:
    """One draw from softmax(logits / temperature), restricted to the ``top_k`` largest logits if given.

    Inverse-CDF sampling with one uniform number: cheap enough for the 60-microsecond-per-character budget.
    """
    scores = np.asarray(logits, dtype=np.float64) / temperature
    if top_k is not None and top_k < scores.size:
        kth = np.partition(scores, -top_k)[-top_k]
        scores = np.where(scores < kth, -np.inf, scores)
    scores = np.exp(scores - scores.max())
    cdf = np.cumsum(scores)
    return int(min(np.searchsorted(cdf, rng.random() * cdf[-1], side="right"), scores.size - 1))
