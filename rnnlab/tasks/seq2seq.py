"""task=seq2seq: encoder-decoder with optional attention, on both backends (rnnlab.models.numpy.seq2seq for the
network and its equations, rnnlab.models.torch.seq2seq for the torch twin).

Training: the mean cross-entropy of the next target token over the real target positions (y_1 .. y_n <eos>; the
padding carries torch's ignore_index). The decoder is fed the gold previous token with probability
``task.teacher_forcing`` per (sequence, step), and its own previous argmax otherwise; the choices come from
``np.random.default_rng([seed, global_step, batch_idx])``, so both backends make the same ones.

Evaluation decodes from the model's own predictions: greedy with ``task.beam_size=1``, else beam search with
length-normalised scores (mean log-probability per token, <eos> included; see ``beam_search``), at most
``task.max_decode_len`` tokens. Metrics per split:

* ``loss``: the teacher-forced cross-entropy (every step fed the gold token), per target token;
* ``exact_match``: the share of sequences whose decoded tokens equal the reference exactly;
* ``bleu``: corpus BLEU-4 of the decoded token sequences (characters for data=dates, phonemes for data=cmudict),
  computed by sacrebleu on the token ids without re-tokenization or smoothing, on the 0..1 scale (``BleuStats``).

The checkpoint monitor is val/exact_match (max). After every validation, with attention, the attention weights of
the first ``task.attention_examples`` validation sequences (greedy decoding) go to TensorBoard and the run's
figures as ``val/attention`` heatmaps.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch.nn import functional as F

from rnnlab.models.decoding import beam_search, greedy_decode, strip_special
from rnnlab.models.seq2seq_spec import Seq2SeqSpec, init_seq2seq_parameters
from rnnlab.tasks.base import RecurrentTask
from rnnlab.tasks.objectives import CrossEntropy

IGNORE = -100
VISIBLE = {" ": "␣"}  # heatmap tick labels: a blank would be invisible


# ------------------------------------------------------------------------------------------------------- BLEU
@functools.cache
def _sacrebleu(max_n: int) -> Any:
    """sacrebleu's BLEU on pre-tokenized text: no tokenization, no lowercasing, no smoothing, order ``max_n``."""
    from sacrebleu.metrics import BLEU

    return BLEU(tokenize="none", lowercase=False, force=True, smooth_method="none", max_ngram_order=max_n)


def _as_text(tokens: Sequence[Any]) -> str:
    """The tokens as one line for sacrebleu: each token's ``str``, joined by single spaces (a token whose text is
    empty or holds whitespace would be split differently, so it is refused; the task passes integer token ids)."""
    words = [str(t) for t in tokens]
    for word in words:
        if not word or any(c.isspace() for c in word):
            raise ValueError(f"BLEU tokens must render as non-empty text without whitespace, got {word!r}")
    return " ".join(words)


class BleuStats:
    """Corpus BLEU (Papineni et al., 2002) as sacrebleu computes it, from sufficient statistics summed over
    sentence pairs (so those of several processes add up before the score is taken).

    Definition (sacrebleu ``BLEU(tokenize="none", smooth_method="none", max_ngram_order=N)``, N = 4 by default,
    one reference per sentence): the token sequences are given already tokenized (token ids for this task, i.e.
    characters for data=dates and phonemes for data=cmudict) and are handed to sacrebleu as their ``str`` joined by
    single spaces, so its whitespace split gives back exactly these tokens (no re-tokenization, no lowercasing).
    For n = 1..N: m_n = the sum over sentences of the clipped n-gram matches (each candidate n-gram counts at most
    as often as it occurs in the reference), t_n = the number of candidate n-grams; c and r the total candidate
    and reference lengths (``BLEU.corpus_score(...).counts, .totals, .sys_len, .ref_len`` of each pair). Then
    (``BLEU.compute_bleu``)

        BLEU = BP * exp((1/N) sum_n log(m_n / t_n)),    BP = 1 if c >= r else exp(1 - r / c)  (0 if c = 0)

    with no smoothing: BLEU is 0 when some m_n is 0 (no n-gram of that order matches anywhere in the corpus), and
    0 for an empty candidate corpus. The value is sacrebleu's score divided by 100, i.e. on the 0..1 scale; since
    sacrebleu multiplies the precisions by 100 first, it equals the formula above to about 1e-15 relative (a
    perfect corpus gives 100.00000000000004 / 100).
    """

    def __init__(self, max_n: int = 4):
        self.max_n = max_n
        self.matches = [0] * max_n
        self.totals = [0] * max_n
        self.cand_len = 0
        self.ref_len = 0

    def add(self, candidate: Sequence[Any], reference: Sequence[Any]) -> None:
        pair = _sacrebleu(self.max_n).corpus_score([_as_text(candidate)], [[_as_text(reference)]])
        self.matches = [a + b for a, b in zip(self.matches, pair.counts, strict=True)]
        self.totals = [a + b for a, b in zip(self.totals, pair.totals, strict=True)]
        self.cand_len += pair.sys_len
        self.ref_len += pair.ref_len

    def counts(self) -> list[int]:
        """The statistics as one list (m_1..m_N, t_1..t_N, c, r); those of several processes add up."""
        return [*self.matches, *self.totals, self.cand_len, self.ref_len]

    @classmethod
    def from_counts(cls, counts: Sequence[float], max_n: int = 4) -> BleuStats:
        stats = cls(max_n)
        values = [round(v) for v in counts]
        stats.matches, stats.totals = values[:max_n], values[max_n : 2 * max_n]
        stats.cand_len, stats.ref_len = values[2 * max_n], values[2 * max_n + 1]
        return stats

    def score(self) -> float:
        from sacrebleu.metrics import BLEU

        correct, total = list(self.matches), list(self.totals)  # copies: compute_bleu may change its lists
        result = BLEU.compute_bleu(
            correct, total, self.cand_len, self.ref_len, smooth_method="none", max_ngram_order=self.max_n
        )
        return result.score / 100.0


def corpus_bleu(candidates: Sequence[Sequence[Any]], references: Sequence[Sequence[Any]], max_n: int = 4) -> float:
    """Corpus BLEU-``max_n`` of token sequences against one reference each (``BleuStats``: sacrebleu's BLEU on the
    given tokens, no smoothing, on the 0..1 scale)."""
    stats = BleuStats(max_n)
    for cand, ref in zip(candidates, references, strict=True):
        stats.add(cand, ref)
    return stats.score()


# ------------------------------------------------------------------------------------------------------- task
class Seq2SeqTask(RecurrentTask):
    """Logs train/loss and train/acc (teacher-forced next-token accuracy) per step; {val,test}/loss, /bleu and
    /exact_match per evaluation; val/attention heatmaps (module docstring)."""

    head = "network"  # the encoder-decoder ends in its own output layer: logits = net(src, src_len, tgt_in, teacher)
    objective = CrossEntropy(ignore_index=IGNORE)
    spec_class = Seq2SeqSpec
    predict_input = "lines"

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self._teacher: np.ndarray | None = None  # this training step's teacher-forcing choices
        self._eval: dict[str, dict[str, Any]] = {}
        self._heatmaps: list[tuple[list[str], list[str], np.ndarray]] = []

    # ------------------------------------------------------------------------------------- network hooks
    @classmethod
    def build_spec(cls, model_cfg: Any, datamodule: Any) -> Seq2SeqSpec:
        """The network for ``model.*`` and the data module's vocabularies (called by rnnlab.build.build_task)."""

        def value(x: Any) -> str:
            return str(getattr(x, "value", x))

        return Seq2SeqSpec(
            cell=value(model_cfg.cell),
            src_vocab_size=len(datamodule.vocab),
            tgt_vocab_size=len(datamodule.target_vocab),
            embed_dim=int(model_cfg.embed_dim),
            hidden_size=int(model_cfg.hidden_size),
            num_layers=int(model_cfg.num_layers),
            bidirectional=bool(model_cfg.bidirectional),
            attention=value(model_cfg.get("attention", "none")),
            dropout=float(model_cfg.dropout),
            nonlinearity=value(model_cfg.nonlinearity),
            pad_id=int(datamodule.pad_id),
            sos_id=int(datamodule.sos_id),
            eos_id=int(datamodule.eos_id),
            variant=str(model_cfg.get("variant", "standard")),
            init=str(model_cfg.get("init", "default")),
            forget_bias=float(model_cfg.get("forget_bias", 0.0)),
        )

    @staticmethod
    def init_arrays(spec: Seq2SeqSpec, seed: int) -> dict[str, np.ndarray]:
        return init_seq2seq_parameters(spec, seed)

    # ------------------------------------------------------------------------------------------ training
    def teacher_choices(self, batch_size: int, steps: int, batch_idx: int) -> np.ndarray | None:
        """[B, T] bool, True where step t is fed the gold token (always at t = 0, <sos>); None when every step is.

        Drawn from ``np.random.default_rng([seed, global_step, batch_idx])``: the same on both backends, and the
        same again when a resumed run repeats a step.
        """
        ratio = float(self.hparams.task.get("teacher_forcing", 1.0))
        if ratio >= 1.0:
            return None
        rng = np.random.default_rng([int(self.hparams.seed), int(self.global_step), int(batch_idx)])
        teacher = rng.random((batch_size, steps)) < ratio
        teacher[:, 0] = True
        return teacher

    @staticmethod
    def targets(tgt: torch.Tensor, pad_id: int) -> torch.Tensor:
        """The next-token targets y_1 .. y_n <eos> of a framed target batch, padding as ignore_index."""
        out = tgt[:, 1:].clone()
        out[out == pad_id] = IGNORE
        return out

    def net_inputs(self, batch: Any) -> tuple[Any, ...]:
        """(src, src_len, tgt_in, teacher) of a training batch: the decoder reads <sos> y_1 .. y_n, and this
        step's teacher-forcing choices (None: always the gold token)."""
        src, src_len, tgt, _ = batch
        teacher = None if self._teacher is None else torch.from_numpy(self._teacher).to(tgt.device)
        return src, src_len, tgt[:, :-1], teacher

    def batch_targets(self, batch: Any) -> torch.Tensor:
        return self.targets(batch[2], self.spec.pad_id)

    def begin_training_step(self, batch: Any, batch_idx: int) -> None:
        tgt = batch[2]
        self._teacher = self.teacher_choices(tgt.shape[0], tgt.shape[1] - 1, batch_idx)

    def training_metrics(self, batch: Any, loss: torch.Tensor, logits: torch.Tensor | None) -> dict[str, Any]:
        y = self.batch_targets(batch)
        mask = y != IGNORE
        return {"acc": (logits.argmax(-1).to(y.device) == y)[mask].float().mean()}

    # ---------------------------------------------------------------------------------------- evaluation
    def forced_logits(self, src: torch.Tensor, src_len: torch.Tensor, tgt_in: torch.Tensor) -> torch.Tensor:
        """Teacher-forced logits [B, T, V] (no dropout, no gradient), a torch tensor for either backend."""
        with torch.no_grad():
            return self.predict((src, src_len, tgt_in, None))[0]

    def decode(self, src: torch.Tensor, src_len: torch.Tensor) -> list[list[int]]:
        """Token ids decoded from the model's own predictions (greedy or beam search), <eos> excluded."""
        t, s = self.hparams.task, self.spec
        src_in, len_in = self.backend.array(src), self.backend.array(src_len)
        beam = int(t.get("beam_size", 1))
        max_len = int(t.get("max_decode_len", 40))
        if beam <= 1:
            return greedy_decode(self.net, src_in, len_in, max_len, s.sos_id, s.eos_id)[0]
        return beam_search(self.net, src_in, len_in, beam, max_len, s.sos_id, s.eos_id)

    def predict_records(self, lines: list[str]) -> list[dict[str, Any]]:
        """rnnlab-predict: per text line, the output decoded as the evaluation decodes (``decode``: greedy, or beam
        search with ``task.beam_size`` > 1), its tokens joined as the data joins them (phonemes by spaces)."""
        from rnnlab.tasks.inputs import chunks, padded, predict_info, read_lines

        info = predict_info(self)
        itos = list(info["target_vocab"])
        separator = str(info.get("target_separator", ""))
        records = []
        for chunk in chunks(read_lines(lines, info, self.vocab.stoi)):
            with torch.no_grad():
                hyps = self.decode(*padded(chunk, self.spec.pad_id, self.device))
            for line, hyp in zip(chunk, hyps, strict=True):
                output = separator.join(itos[i] for i in hyp)
                records.append({"line": line.number, "input": line.text, "output": output})
        return records

    def _evaluate(self, batch: Any, stage: str, batch_idx: int) -> None:
        src, src_len, tgt, _ = batch
        y = self.targets(tgt, self.spec.pad_id)
        logits = self.forced_logits(src, src_len, tgt[:, :-1])
        acc = self._eval.setdefault(stage, {"nll": 0.0, "tokens": 0, "exact": 0, "n": 0, "bleu": BleuStats()})
        acc["nll"] += float(F.cross_entropy(logits.reshape(-1, logits.shape[-1]).double().cpu(),
                                            y.reshape(-1).cpu(), ignore_index=IGNORE, reduction="sum"))  # fmt: skip
        acc["tokens"] += int((y != IGNORE).sum())
        hyps = self.decode(src, src_len)
        s = self.spec
        for hyp, row in zip(hyps, tgt.tolist(), strict=True):
            ref = strip_special(row[1:], s.eos_id, skip=(s.pad_id,))
            acc["exact"] += int(hyp == ref)
            acc["n"] += 1
            acc["bleu"].add(hyp, ref)
        count = int(self.hparams.task.get("attention_examples", 0))
        if stage == "val" and batch_idx == 0 and s.has_attention and count > 0:
            self._keep_heatmaps(src[:count], src_len[:count])

    def _keep_heatmaps(self, src: torch.Tensor, src_len: torch.Tensor) -> None:
        """Greedy decoding of a few validation sequences with their attention weights, for ``val/attention``."""
        s = self.spec
        src_in, len_in = self.backend.array(src), self.backend.array(src_len)
        max_len = int(self.hparams.task.get("max_decode_len", 40))
        hyps, weights = greedy_decode(self.net, src_in, len_in, max_len, s.sos_id, s.eos_id, with_attention=True)
        target_itos = self._target_itos()
        self._heatmaps = []
        for b, hyp in enumerate(hyps):
            n_src = int(src_len[b])
            steps = min(len(hyp) + 1, weights.shape[1])  # the tokens and the step that emitted <eos>
            source = [VISIBLE.get(self.vocab.itos[int(i)], self.vocab.itos[int(i)]) for i in src[b, :n_src].tolist()]
            output = [target_itos[i] if i < len(target_itos) else str(i) for i in hyp] + ["<eos>"]
            self._heatmaps.append((source, output[:steps], weights[b, :steps, :n_src]))

    def token_embeddings(self, weights: dict[str, Any]) -> list[tuple[str, Any, list[str]]]:
        """The source and the target embedding, each with its vocabulary (rnnlab.projector)."""
        return [
            ("src_embedding", weights["src_embedding.weight"], list(self.vocab.itos)),
            ("tgt_embedding", weights["tgt_embedding.weight"], self._target_itos()),
        ]

    def _target_itos(self) -> list[str]:
        dm = getattr(self.trainer, "datamodule", None) if self._trainer is not None else None
        vocab = getattr(dm, "target_vocab", None)
        return list(vocab.itos) if vocab is not None else [str(i) for i in range(self.spec.tgt_vocab_size)]

    def _log_split(self, stage: str) -> None:
        """The split's metrics from its sums (BLEU from its n-gram statistics), added over the processes of a
        multi-process run first; every process calls this, with or without batches of its own."""
        from rnnlab.runtime.distributed import all_reduce_sum

        acc = self._eval.pop(stage, None) or {"nll": 0.0, "tokens": 0, "exact": 0, "n": 0, "bleu": BleuStats()}
        bleu = acc["bleu"]
        total = all_reduce_sum([acc["nll"], acc["tokens"], acc["exact"], acc["n"], *bleu.counts()], self.device)
        nll, tokens, exact, n = total[:4]
        if not n:
            return
        bleu = BleuStats.from_counts(total[4:], bleu.max_n)
        # sync_dist: the values are equal everywhere already; it tells Lightning so (and costs one all-reduce)
        self.log(f"{stage}/loss", nll / max(tokens, 1), prog_bar=stage == "val", sync_dist=True)
        self.log(f"{stage}/exact_match", exact / n, prog_bar=stage == "val", sync_dist=True)
        self.log(f"{stage}/bleu", bleu.score(), prog_bar=stage == "val", sync_dist=True)

    def validation_metrics(self, datamodule: Any) -> set[str]:
        return {"loss", "exact_match", "bleu"}

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        self._evaluate(batch, "val", batch_idx)

    def test_step(self, batch: Any, batch_idx: int) -> None:
        self._evaluate(batch, "test", batch_idx)

    def on_validation_epoch_end(self) -> None:
        self._log_split("val")
        heatmaps, self._heatmaps = self._heatmaps, []
        if heatmaps and self.trainer is not None and not self.trainer.sanity_checking:
            from rnnlab.plots import log_figure

            log_figure(self, "val/attention", plot_attention(heatmaps, f"step {self.global_step}"))

    def on_test_epoch_end(self) -> None:
        self._log_split("test")

    # ------------------------------------------------------------------------------------------ counting
    @staticmethod
    def analysis_inputs(batch: Any) -> tuple[torch.Tensor, torch.Tensor | None]:
        return batch[0], batch[1]

    @staticmethod
    def tokens_of(batch: Any) -> int:
        """Target tokens predicted in a batch (y_1 .. y_n <eos> per sequence)."""
        return int((batch[3] - 1).sum())


def plot_attention(heatmaps: list[tuple[list[str], list[str], np.ndarray]], title: str) -> Any:
    """One heatmap per example: rows are the decoded tokens (the step that emitted them), columns the source
    tokens, colour the attention weight a_tj."""
    from rnnlab.plots import new_figure

    n = len(heatmaps)
    width = max(4.0, 0.28 * max(len(src) for src, _, _ in heatmaps) + 2.0)
    height = sum(1.2 + 0.25 * len(out) for _, out, _ in heatmaps)
    fig = new_figure(width, height)
    axes = fig.subplots(n, 1, squeeze=False)[:, 0]
    for ax, (source, output, weights) in zip(axes, heatmaps, strict=True):
        image = ax.imshow(weights, cmap="viridis", vmin=0.0, vmax=1.0, aspect="auto")
        ax.set_xticks(range(len(source)), source, fontsize=7)
        ax.set_yticks(range(len(output)), output, fontsize=7)
        ax.set_xlabel("source")
        ax.set_ylabel("decoded")
        fig.colorbar(image, ax=ax, fraction=0.03)
    axes[0].set_title(f"attention weights, {title}")
    return fig
