"""task=language_model: next-character prediction, with temperature sampling.

Stateful truncated BPTT (``data.tbptt=true``): the data module cuts each split into batch_size contiguous
streams and batch i holds window i of every stream (``rnnlab.data.datamodules.CharStreams``). The task then
starts batch i+1 from the final state of batch i, detached: the forward pass sees the whole history of the
stream, the gradient stops at the window's start (h_0 of window i+1 is a constant, dL/dh_0 is dropped). On the
torch backend the state is ``.detach()``-ed; on the NumPy backend the state arrays are passed to the next
forward and the backward's gradient of the initial state is discarded, which is the same computation. The
training state is reset (zeros) at the first batch of every epoch, the evaluation state at the start of every
validation and test, and evaluation carries its own state through the split the same way.

Checkpoints (``tbptt_state``) hold the carried training state, and the stream loader saves how many windows
the epoch has taken, so a resume continues exactly:

* at an epoch boundary trivially (the state is reset there anyway);
* in the middle of an epoch (a checkpoint written after a training step: ``trainer.max_steps``, a mid-epoch
  validation, ``every_n_train_steps``): the next batch is the next window and starts from the saved state, so
  on the NumPy backend (whose dropout generator is checkpointed too) every later loss and parameter is
  bit-identical to an uninterrupted run. On the torch backend the same holds without dropout; with dropout,
  torch's global generator is reseeded by the resume, as for every other task.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
from lightning.pytorch.loggers import TensorBoardLogger
from lightning.pytorch.utilities import rank_zero_only
from torchmetrics import MeanMetric

from rnnlab.tasks.base import RecurrentTask
from rnnlab.tasks.objectives import CrossEntropy

LN2 = math.log(2.0)


class LanguageModelTask(RecurrentTask):
    """Logs train/loss (nats per char), train/bpc and, per evaluation, {val,test}/loss, /bpc and /ppl.

    Evaluation losses are averaged over every predicted character of the split (not over batches); bits per
    character is loss / ln 2 and perplexity exp(loss). After each validation a sample is generated and logged
    as TensorBoard text (tag ``samples/generated``), with a heatmap of the distributions its first
    ``PROB_STEPS`` characters were drawn from (tag ``samples/next_char_probs``, also a PNG under the run's
    ``figures/``). With ``data.tbptt=true`` the state is carried across batches (see the module docstring).
    """

    head = "per_step"
    objective = CrossEntropy()

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        if self.spec.bidirectional:
            raise ValueError("a bidirectional language model would see the characters it predicts")
        self.nll = torch.nn.ModuleDict({"val": MeanMetric(), "test": MeanMetric()})
        self.last_sample: str | None = None
        self.last_probs_figure: Any = None  # where the last next-character picture went (a Path or None)
        # stateful TBPTT (data.tbptt=true): the state carried across training batches and across the batches of
        # the running evaluation, in the backend's own type (torch tensors or NumPy arrays); None is zeros
        self.train_state: Any = None
        self.eval_state: Any = None

    @property
    def tbptt(self) -> bool:
        """Whether batches come from a stream data module (``data.tbptt=true``): carry the state if so."""
        trainer = self._trainer
        datamodule = getattr(trainer, "datamodule", None) if trainer is not None else None
        return bool(getattr(datamodule, "tbptt", False))

    def forward(self, x: torch.Tensor, state: Any = None) -> tuple[torch.Tensor, Any]:
        """Logits [B, T, V] (a torch tensor for either backend) and the final state (the backend's own type)."""
        return self.predict((x, None), state)

    def _loss(self, batch: Any, state: Any = None) -> tuple[torch.Tensor, Any]:
        """Mean cross-entropy (nats per character) of a batch started from ``state``, and the final state."""
        x, y = batch
        logits, final = self(x, state)
        return self.objective.torch(logits, y), final

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        carry = self.tbptt
        if carry and batch_idx == 0:
            self.train_state = None  # every epoch starts from zeros (a mid-epoch resume starts at batch_idx > 0)
        state = self.train_state if carry else None
        self.begin_training_step(batch, batch_idx)
        loss, _, final = self.backend.training_step(self, batch, batch_idx, state)
        if carry:
            self.train_state = self.backend.carried(final)
        self.log_training(batch, loss, None)
        return loss

    def training_metrics(self, batch: Any, loss: torch.Tensor, logits: torch.Tensor | None) -> dict[str, Any]:
        return {"bpc": loss / LN2}

    def _eval_step(self, stage: str, batch: Any, batch_idx: int) -> None:
        carry = self.tbptt
        if batch_idx == 0:
            self.eval_state = None
        loss, final = self._loss(batch, self.eval_state if carry else None)
        if carry:
            self.eval_state = self.backend.carried(final)
        self.nll[stage].update(loss, weight=batch[1].numel())

    def validation_metrics(self, datamodule: Any) -> set[str]:
        return {"loss", "bpc", "ppl"}

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        self._eval_step("val", batch, batch_idx)

    def test_step(self, batch: Any, batch_idx: int) -> None:
        self._eval_step("test", batch, batch_idx)

    def on_validation_epoch_start(self) -> None:
        self.eval_state = None

    def on_test_epoch_start(self) -> None:
        self.eval_state = None

    # ------------------------------------------------------------------------------------------ checkpoints
    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        super().on_save_checkpoint(checkpoint)
        if self.train_state is not None:
            checkpoint["tbptt_state"] = self.backend.state_to_checkpoint(self.train_state)

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        super().on_load_checkpoint(checkpoint)
        state = checkpoint.get("tbptt_state")
        self.train_state = None if state is None else self.backend.state_from_checkpoint(state)

    def _log_split(self, stage: str) -> None:
        nll = self.nll[stage].compute()  # torchmetrics adds up the processes of a multi-process run here
        self.nll[stage].reset()
        # sync_dist: the values are equal everywhere already; it tells Lightning so (and costs one all-reduce)
        self.log(f"{stage}/loss", nll, prog_bar=stage == "val", sync_dist=True)
        self.log(f"{stage}/bpc", nll / LN2, prog_bar=True, sync_dist=True)
        self.log(f"{stage}/ppl", torch.exp(nll), sync_dist=True)

    def on_validation_epoch_end(self) -> None:
        self._log_split("val")
        if not self.trainer.sanity_checking:
            self._log_sample()

    def on_test_epoch_end(self) -> None:
        self._log_split("test")

    @rank_zero_only
    def _log_sample(self) -> None:
        """The validation's sample as TensorBoard text (``samples/generated``) and the picture of the next-character
        distributions it was drawn from (``samples/next_char_probs``, TensorBoard image and PNG)."""
        t = self.hparams.task
        if t.get("sample_length", 0) <= 0:
            return
        probs: list[np.ndarray] = []
        prompt = t.get("sample_prompt", "")
        text = self.generate(prompt, t["sample_length"], t["temperature"], t.get("top_k"), record=probs)
        self.last_sample = text
        for logger in self.loggers:
            if isinstance(logger, TensorBoardLogger):
                # four-space indentation makes TensorBoard's markdown keep the line breaks
                body = "    " + text.replace("\n", "\n    ")
                logger.experiment.add_text("samples/generated", body, global_step=self.global_step)
        from rnnlab.plots import log_figure

        steps = min(PROB_STEPS, len(probs))
        chosen = self.vocab.encode(text[len(prompt) : len(prompt) + steps])
        fig = next_char_probs_figure(
            np.stack(probs[:steps]), chosen, self.vocab.itos, t["temperature"], t.get("top_k"), self.global_step
        )
        self.last_probs_figure = log_figure(self, "samples/next_char_probs", fig)

    @torch.no_grad()
    def generate(
        self,
        prompt: str = "",
        length: int = 300,
        temperature: float = 0.8,
        top_k: int | None = None,
        seed: int = 0,
        record: list[np.ndarray] | None = None,
    ) -> str:
        """Sample ``length`` characters after ``prompt`` ("" starts from a newline), one step at a time.

        The backend runs the network (``prompt`` then one ``step`` per character, in evaluation mode; the NumPy
        backend steps with its batch-1 fast path) and both share the sampler (``sample_next``, NumPy generator
        seeded with ``seed``), so equal networks give equal samples. Given a list
        ``record``, every step appends the distribution its character is drawn from (``next_char_probs``:
        temperature and top_k applied, float64 [V]); recording costs one more softmax per step and does not
        change the draws, so it is off unless asked for.
        """
        if temperature <= 0:
            raise ValueError("temperature must be > 0")
        rng = np.random.default_rng(seed)
        context = prompt or ("\n" if "\n" in self.vocab.stoi else self.vocab.itos[0])
        out: list[int] = []
        was_training = self.training
        self.eval()
        try:
            logits, state = self.backend.prompt(self.net, self.vocab.encode(context))
            for _ in range(length):
                if record is not None:
                    record.append(next_char_probs(logits, temperature, top_k))
                nxt = sample_next(logits, temperature, top_k, rng)
                out.append(nxt)
                logits, state = self.backend.step(self.net, nxt, state)
        finally:
            self.train(was_training)
        return prompt + self.vocab.decode(out)


PROB_STEPS = 40  # generated steps shown by the next-character picture
PROB_TOP = 5  # characters per step that enter its rows
PROB_ROWS = 24  # at most this many rows (characters)


def _weights(logits: np.ndarray, temperature: float, top_k: int | None) -> np.ndarray:
    """Unnormalised sampling weights exp((z - max z) / T), zero outside the ``top_k`` largest logits."""
    scores = np.asarray(logits, dtype=np.float64) / temperature
    if top_k is not None and top_k < scores.size:
        kth = np.partition(scores, -top_k)[-top_k]
        scores = np.where(scores < kth, -np.inf, scores)
    return np.exp(scores - scores.max())


def sample_next(logits: np.ndarray, temperature: float, top_k: int | None, rng: np.random.Generator) -> int:
    """One draw from softmax(logits / temperature), restricted to the ``top_k`` largest logits if given.

    Inverse-CDF sampling with one uniform number: cheap enough for the 60-microsecond-per-character budget.
    """
    weights = _weights(logits, temperature, top_k)
    cdf = np.cumsum(weights)
    return int(min(np.searchsorted(cdf, rng.random() * cdf[-1], side="right"), weights.size - 1))


def next_char_probs(logits: np.ndarray, temperature: float, top_k: int | None) -> np.ndarray:
    """The distribution ``sample_next`` draws from: softmax(logits / T) renormalised over the top_k, float64."""
    weights = _weights(logits, temperature, top_k)
    return weights / weights.sum()


def _char_label(ch: str) -> str:
    """A character as a readable axis label (matplotlib would read "$" as mathtext)."""
    names = {"\n": "\\n", " ": "␣", "\t": "\\t"}
    return names.get(ch, ch.replace("$", r"\$"))


def next_char_probs_figure(
    probs: np.ndarray,
    chosen: np.ndarray,
    itos: list[str],
    temperature: float,
    top_k: int | None,
    step: int | None = None,
) -> Any:
    """Heatmap of the next-character distributions of the first generated steps.

    x: generation step, labelled with the character drawn there; y: characters, those among the ``PROB_TOP``
    most likely at some step (and every drawn one), ranked by their summed probability, at most ``PROB_ROWS``;
    colour: probability (0..1). A red square marks the drawn character of each step.
    """
    from rnnlab.plots import new_figure

    probs = np.asarray(probs, dtype=np.float64)
    steps = probs.shape[0]
    chosen = np.asarray(chosen, dtype=np.int64)[:steps]
    top = np.argsort(-probs, axis=1, kind="stable")[:, :PROB_TOP]
    candidates = np.unique(np.concatenate([top.ravel(), chosen]))
    ranked = candidates[np.argsort(-probs[:, candidates].sum(axis=0), kind="stable")]
    drawn = [c for c in ranked if c in set(chosen.tolist())]
    rows = [*drawn, *(c for c in ranked if c not in drawn)][:PROB_ROWS]  # drawn characters first keep their row
    rows = sorted(rows, key=lambda c: -probs[:, c].sum())
    where = {int(c): r for r, c in enumerate(rows)}
    fig = new_figure(width=max(6.0, 0.2 * steps + 2.0), height=max(3.0, 0.22 * len(rows) + 1.6))
    ax = fig.add_subplot()
    image = ax.imshow(probs[:, rows].T, aspect="auto", cmap="viridis", vmin=0.0, vmax=1.0, interpolation="nearest")
    ax.set_xticks(range(steps), [_char_label(itos[c]) for c in chosen], fontsize=7)
    ax.set_yticks(range(len(rows)), [_char_label(itos[c]) for c in rows], fontsize=7)
    marks = [(s, where[int(c)]) for s, c in enumerate(chosen) if int(c) in where]
    if marks:
        xs, ys = zip(*marks, strict=True)
        ax.scatter(xs, ys, marker="s", s=40, facecolors="none", edgecolors="red", linewidths=0.8)
    ax.set_xlabel("generation step (the character drawn)")
    ax.set_ylabel("next character")
    at = "" if step is None else f", step {step}"
    ax.set_title(f"next-character probabilities (temperature {temperature:g}, top_k {top_k}{at})", fontsize=9)
    fig.colorbar(image, ax=ax, label="probability")
    return fig
