"""task=polyphonic: polyphonic music as a piano roll, step t+1 predicted from steps <= t with 88 independent
Bernoulli outputs (Boulanger-Lewandowski, Bengio and Vincent 2012; the tables of Chung et al. 2014 and Bai et al.
2018).

**Batches** (``kind=piano_roll``, e.g. data=jsb_chorales): (x [B, T, 88], lengths [B], y [B, T, 88]) with, for a
sequence r of n steps, x = r[:n-1], y = r[1:n] and length n - 1: the first step of a sequence is never predicted.

**Model**: z_t = W h_t + b for every step t < length (the head shared over time, 88 outputs, one per key of the
piano, MIDI 21..108); p(key k sounds at t+1) = sigmoid(z_tk). The network is unidirectional (a backward direction
would see the steps it predicts).

**Loss and metrics** (rnnlab.tasks.objectives.BernoulliNLL, both backends):

- ``nll`` = (1/N) sum over predicted steps of sum_k [softplus(z) - z y], N the number of predicted steps: the
  negative log-likelihood in nats per time step, summed over the 88 keys, as the published tables define it. Over a
  split, N counts every predicted step of every sequence (steps, not batches, are averaged); ``{val,test}/loss`` is
  the same number.
- ``frame_acc`` = TP / (TP + FP + FN) over all keys and predicted steps of the split, a key predicted on when
  sigmoid(z) > 0.5 (z > 0): the frame-level accuracy of Bay, Ehmann and Downie (2009).

After every validation a sample (``task.sample_length`` steps, drawn as ``generate_roll`` draws them, started from
the first step of the first validation sequence) goes to TensorBoard and the run's figures as a piano-roll picture
(``samples/piano_roll``: the sampled notes over the probabilities they were drawn from). ``rnnlab-generate`` writes
a sample of a checkpoint of either backend to a standard MIDI file.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from rnnlab.tasks.base import RecurrentTask
from rnnlab.tasks.objectives import BernoulliNLL

KEYS = 88  # piano keys, MIDI 21 (A0) .. 108 (C8)
LOWEST_MIDI = 21


def sample_step(logits: np.ndarray, temperature: float, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """One step of 88 independent draws: (notes 0/1 float64 [88], their probabilities sigmoid(z / temperature))."""
    z = np.asarray(logits, dtype=np.float64) / temperature
    e = np.exp(-np.abs(z))  # sigmoid without overflow: 1 / (1 + e^-z) for z >= 0, e^z / (1 + e^z) below
    p = np.where(z >= 0, 1.0 / (1.0 + e), e / (1.0 + e))
    return (rng.random(p.shape) < p).astype(np.float64), p


def frame_counts(logits: torch.Tensor, y: torch.Tensor, mask: torch.Tensor) -> tuple[int, int, int]:
    """(TP, FP, FN) of the notes predicted on (z > 0) against the targets, over the steps in ``mask`` [B, T]."""
    pred = (logits > 0)[mask]
    true = y[mask] > 0.5
    tp = int((pred & true).sum())
    return tp, int((pred & ~true).sum()), int((~pred & true).sum())


class PolyphonicTask(RecurrentTask):
    """Logs train/loss (= train/nll), per evaluation {val,test}/loss, /nll and /frame_acc (module docstring)."""

    head = "per_step"
    objective = BernoulliNLL()

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        if self.spec.bidirectional:
            raise ValueError("a bidirectional network would see the steps it predicts")
        self._eval: dict[str, list[float]] = {}
        self.last_sample: np.ndarray | None = None  # the last validation's sampled roll [T, 88]
        self.last_sample_figure: Any = None

    def forward(self, x: torch.Tensor, lengths: torch.Tensor | None = None, state: Any = None) -> tuple[Any, Any]:
        """Logits [B, T, 88] (a torch tensor for either backend) and the final state (the backend's own type)."""
        return self.predict((x, lengths), state)

    @staticmethod
    def step_mask(lengths: torch.Tensor, steps: int) -> torch.Tensor:
        """[B, T] True at the predicted steps t < length."""
        return torch.arange(steps, device=lengths.device)[None, :] < lengths[:, None]

    def batch_targets(self, batch: Any) -> torch.Tensor:
        """y with every key of the padding steps set to -1 (unscored by the objective)."""
        _, lengths, y = batch
        mask = self.step_mask(lengths, y.shape[1])
        return y.masked_fill(~mask[:, :, None], -1.0)

    def training_metrics(self, batch: Any, loss: torch.Tensor, logits: torch.Tensor | None) -> dict[str, Any]:
        return {"nll": loss}

    # ------------------------------------------------------------------------------------------- evaluation
    def _evaluate(self, batch: Any, stage: str) -> None:
        """Adds the batch's summed NLL, predicted steps and frame counts to the split's sums."""
        x, lengths, y = batch
        logits, _ = self(x, lengths)
        mask = self.step_mask(lengths, y.shape[1])
        z, t = logits.double(), y.double()
        nll = torch.nn.functional.binary_cross_entropy_with_logits(z[mask], t[mask], reduction="sum")
        sums = self._eval.setdefault(stage, [0.0] * 5)
        for i, value in enumerate((float(nll), int(mask.sum()), *frame_counts(logits, y, mask))):
            sums[i] += value

    def validation_metrics(self, datamodule: Any) -> set[str]:
        return {"loss", "nll", "frame_acc"}

    def _log_split(self, stage: str) -> None:
        """The split's metrics from its sums, added over the processes of a multi-process run first."""
        from rnnlab.runtime.distributed import all_reduce_sum

        nll, steps, tp, fp, fn = all_reduce_sum(self._eval.pop(stage, None) or [0.0] * 5, self.device)
        if not steps:
            return
        # float64 tensors: a Python float would be logged in float32 (about 3e-6 nats at 50)
        value = torch.tensor(nll / steps, dtype=torch.float64)
        frame_acc = torch.tensor(tp / (tp + fp + fn) if tp + fp + fn else 0.0, dtype=torch.float64)
        # sync_dist: the values are equal everywhere already; it tells Lightning so (and costs one all-reduce)
        self.log(f"{stage}/loss", value, sync_dist=True)
        self.log(f"{stage}/nll", value, prog_bar=True, sync_dist=True)
        self.log(f"{stage}/frame_acc", frame_acc, sync_dist=True)

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        self._evaluate(batch, "val")

    def test_step(self, batch: Any, batch_idx: int) -> None:
        self._evaluate(batch, "test")

    def on_validation_epoch_end(self) -> None:
        self._log_split("val")
        if not self.trainer.sanity_checking and self.trainer.global_rank == 0:
            self._log_sample()

    def on_test_epoch_end(self) -> None:
        self._log_split("test")

    # ------------------------------------------------------------------------------------------- sampling
    def _log_sample(self) -> None:
        """The validation's sample as a piano-roll picture (``samples/piano_roll``: TensorBoard and a PNG)."""
        t = self.hparams.task
        length = int(t.get("sample_length", 0))
        if length <= 0:
            return
        prompt = self._validation_prompt()
        probs: list[np.ndarray] = []
        roll = self.generate_roll(prompt, length, float(t.get("temperature", 1.0)), seed=0, record=probs)
        self.last_sample = roll
        from rnnlab.plots import log_figure

        fig = piano_roll_figure(roll, np.stack(probs), len(prompt), step=int(self.global_step))
        self.last_sample_figure = log_figure(self, "samples/piano_roll", fig)

    def _validation_prompt(self) -> np.ndarray:
        """The first step of the first validation sequence (a silent step if there is none)."""
        datamodule = getattr(self.trainer, "datamodule", None)
        split = getattr(datamodule, "splits", {}).get("val") if datamodule is not None else None
        if split is not None and len(split):
            x, _, _ = split.collate([0])
            return x[0, :1].numpy().astype(np.float64)
        return np.zeros((1, KEYS))

    @torch.no_grad()
    def generate_roll(
        self,
        prompt: np.ndarray,
        length: int,
        temperature: float = 1.0,
        seed: int = 0,
        record: list[np.ndarray] | None = None,
    ) -> np.ndarray:
        """Sample ``length`` steps after ``prompt`` (a 0/1 piano roll [P >= 1, 88]); returns [P + length, 88].

        The backend runs the network in evaluation mode (the prompt in one call, then one step per sampled step,
        the state carried) and both backends share the sampler (``sample_step``: 88 independent draws from
        sigmoid(z / temperature), a NumPy generator seeded with ``seed``), so equal networks give equal samples.
        Given a list ``record``, every sampled step appends the probabilities it was drawn from.
        """
        if temperature <= 0:
            raise ValueError("temperature must be > 0")
        prompt = np.asarray(prompt, dtype=np.float64)
        if prompt.ndim != 2 or prompt.shape[1] != KEYS or len(prompt) < 1:
            raise ValueError(f"prompt must be a piano roll [P >= 1, {KEYS}], got {prompt.shape}")
        rng = np.random.default_rng(seed)
        dtype = torch.float64 if self._float64() else torch.float32
        device = self.device if self.backend == "torch" else torch.device("cpu")
        rows = [*prompt]
        was_training = self.training
        self.eval()
        try:
            x = torch.as_tensor(prompt[None], dtype=dtype, device=device)
            state = None
            for _ in range(length):
                logits, final = self.predict((x, None), state)
                state = self.backend.carried(final)
                notes, p = sample_step(logits[0, -1].double().cpu().numpy(), temperature, rng)
                if record is not None:
                    record.append(p)
                rows.append(notes)
                x = torch.as_tensor(notes[None, None], dtype=dtype, device=device)
        finally:
            self.train(was_training)
        return np.stack(rows)

    def _float64(self) -> bool:
        if self.backend == "numpy":
            return self.net.dtype == np.float64
        return self.net.head.weight.dtype == torch.float64


def key_name(key: int) -> str:
    """The name of piano key ``key`` (0 = A0, MIDI 21; 87 = C8)."""
    midi = key + LOWEST_MIDI
    return f"{['C', 'C#', 'D', 'D#', 'E', 'F', 'F#', 'G', 'G#', 'A', 'A#', 'B'][midi % 12]}{midi // 12 - 1}"


def piano_roll_figure(roll: np.ndarray, probs: np.ndarray | None = None, prompt_steps: int = 0,
                      step: int | None = None) -> Any:  # fmt: skip
    """A piano roll (time across, keys up) of the keys that sound anywhere, padded by two: the probabilities the
    sampled steps were drawn from as the background (0..1), the sounding notes as black cells, the prompt's steps
    shaded."""
    from rnnlab.plots import new_figure

    roll = np.asarray(roll, dtype=np.float64)
    steps = len(roll)
    sounding = np.flatnonzero(roll.any(axis=0))
    low, high = (int(sounding.min()), int(sounding.max())) if sounding.size else (39, 48)
    low, high = max(0, low - 2), min(KEYS - 1, high + 2)
    background = np.zeros((steps, KEYS))
    if probs is not None and len(probs):
        background[prompt_steps : prompt_steps + len(probs)] = probs
    fig = new_figure(width=max(6.0, 0.08 * steps + 2.0), height=max(3.0, 0.09 * (high - low + 1) + 1.2))
    ax = fig.add_subplot()
    image = ax.imshow(background[:, low : high + 1].T, origin="lower", aspect="auto", cmap="Blues", vmin=0.0,
                      vmax=1.0, interpolation="nearest", extent=(-0.5, steps - 0.5, low - 0.5, high + 0.5))  # fmt: skip
    t, k = np.nonzero(roll[:, low : high + 1])
    ax.scatter(t, k + low, marker="s", s=12, color="black", linewidths=0)
    if prompt_steps:
        ax.axvspan(-0.5, prompt_steps - 0.5, color="orange", alpha=0.25, label="prompt")
        ax.legend(loc="upper right", fontsize=7)
    ticks = [k for k in range(low, high + 1) if (k + LOWEST_MIDI) % 12 == 0]  # the Cs
    ax.set_yticks(ticks, [key_name(k) for k in ticks], fontsize=7)
    ax.set_xlabel("step (quarter notes)")
    ax.set_ylabel("key")
    at = "" if step is None else f" (training step {step})"
    ax.set_title(f"sampled piano roll{at}: notes in black over p(note)", fontsize=9)
    fig.colorbar(image, ax=ax, label="p(note)")
    return fig
