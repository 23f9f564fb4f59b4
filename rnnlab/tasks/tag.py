"""task=tag: one label per timestep (sequence labelling) from the recurrent outputs at every step (both
directions when bidirectional, the default for this task: conf/task/tag.yaml).

Model: logits_t = W [h_t^fwd ; h_t^bwd] + b for every step t < length (the head shared over time). With
``lengths``, the network of either backend runs packed sequences: a sequence sees only its own tokens, the
backward direction starts at its last token, and padding changes nothing (steps past a length output zeros and get
zero gradient, so they leave the weights alone).

Loss: the mean cross-entropy over the labelled steps, -1/|M| sum_{(b,t) in M} log softmax(logits_bt)[y_bt] with
M = {(b, t): y_bt != -100} (padding and unscored steps carry label -100, torch's ``ignore_index``).

Metrics per evaluation split: ``loss`` (the same mean over all labelled steps of the split), ``acc`` (token
accuracy over the labelled steps: all words on ner_synth, the recalled symbols on copy) and, when the data's
labels are BIO tags (``label_names`` with B- entries, data=ner_synth), ``entity_f1``, ``entity_precision`` and
``entity_recall``: conlleval's exact-match span scores. The checkpoint monitor follows the data: val/entity_f1 on
ner_synth, val/acc otherwise (``rnnlab.config.tag_monitor``).
"""

from __future__ import annotations

from typing import Any

import torch
from torch.nn import functional as F

from rnnlab.tasks.base import RecurrentTask
from rnnlab.tasks.objectives import CrossEntropy

IGNORE = -100


# ------------------------------------------------------------------------------------------- entity spans
def spans(tags: list[str]) -> set[tuple[str, int, int]]:
    """Entity spans (type, start, end exclusive) of a BIO tag sequence, read as conlleval reads them.

    A span starts at B-X, and also at an I-X that does not continue an X span (after O, after another type, or
    at the start); it runs over the following I-X tags. A B-X right after an X span starts a new span. This is
    seqeval's default (conlleval) mode, not its strict IOB2 mode, which drops an I-X that follows no B-X or I-X;
    tests/test_tag_regress.py checks the spans and the scores against seqeval's on hand-made and random tags.
    """
    found = set()
    start: int | None = None
    kind: str | None = None
    for i, tag in enumerate([*tags, "O"]):
        prefix, _, t = tag.partition("-")
        continues = prefix == "I" and t == kind
        if start is not None and not continues:
            found.add((kind, start, i))
            start, kind = None, None
        if prefix in ("B", "I") and not continues:
            start, kind = i, t
    return found


def entity_scores(true_tags: list[list[str]], pred_tags: list[list[str]]) -> tuple[float, float, float]:
    """Precision, recall and F1 of exact-match entity spans over a corpus (conlleval's overall line).

    precision = |T & P| / |P|, recall = |T & P| / |T| and F1 = 2 p r / (p + r), with T and P the sets of
    (sentence, type, start, end) spans of the true and the predicted tags; a span counts only if its type and both
    ends match. Each is 0 when undefined (no predicted span, no true span, p + r = 0).
    """
    return scores_from_counts(*entity_counts(true_tags, pred_tags))


def entity_counts(true_tags: list[list[str]], pred_tags: list[list[str]]) -> tuple[int, int, int]:
    """(|T & P|, |P|, |T|) of :func:`entity_scores`: sums over sentences, so the counts of several processes add."""
    tp = n_pred = n_true = 0
    for t, p in zip(true_tags, pred_tags, strict=True):
        ts, ps = spans(t), spans(p)
        tp += len(ts & ps)
        n_pred += len(ps)
        n_true += len(ts)
    return tp, n_pred, n_true


def scores_from_counts(tp: float, n_pred: float, n_true: float) -> tuple[float, float, float]:
    """Precision, recall and F1 from the span counts of :func:`entity_counts`."""
    precision = tp / n_pred if n_pred else 0.0
    recall = tp / n_true if n_true else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return precision, recall, f1


class TagTask(RecurrentTask):
    """Cross-entropy over the labelled steps. Logs train/loss and train/acc per step, {val,test}/loss and /acc per
    evaluation, and for BIO labels /entity_f1, /entity_precision and /entity_recall (module docstring)."""

    head = "per_step"
    objective = CrossEntropy(ignore_index=IGNORE)
    predict_input = "lines"

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self._eval: dict[str, dict[str, Any]] = {}

    def forward(self, x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """Logits [B, T, C] (a torch tensor for either backend); rows past a sequence's length are meaningless
        (their labels are -100)."""
        return self.predict((x, lengths))[0]

    def training_metrics(self, batch: Any, loss: torch.Tensor, logits: torch.Tensor | None) -> dict[str, Any]:
        y = batch[2]
        return {"acc": (logits.argmax(-1) == y)[y != IGNORE].float().mean()}

    def predict_records(self, lines: list[str]) -> list[dict[str, Any]]:
        """rnnlab-predict: per text line, its tokens and the most probable label of each (the argmax of the logits,
        as the evaluation scores it), labels named as the data names them."""
        from rnnlab.tasks.inputs import chunks, padded, predict_info, read_lines

        info = predict_info(self)
        names = list(info.get("labels") or [str(i) for i in range(self.spec.num_outputs)])
        records = []
        for chunk in chunks(read_lines(lines, info, self.vocab.stoi)):
            with torch.no_grad():
                pred = self(*padded(chunk, self.spec.padding_idx or 0, self.device)).argmax(-1).cpu().tolist()
            for line, row in zip(chunk, pred, strict=True):
                tags = [names[i] for i in row[: len(line.tokens)]]
                records.append({"line": line.number, "tokens": line.tokens, "tags": tags})
        return records

    # ------------------------------------------------------------------------------------------- evaluation
    def _evaluate(self, batch: Any, stage: str) -> None:
        """Accumulates the split's summed NLL, correct and labelled counts, and (BIO labels) the tag sequences."""
        x, lengths, y = batch
        logits = self(x, lengths)
        acc = self._eval.setdefault(stage, {"nll": 0.0, "correct": 0, "count": 0, "true": [], "pred": []})
        mask = y != IGNORE
        acc["nll"] += float(F.cross_entropy(logits.reshape(-1, logits.shape[-1]).double(), y.reshape(-1),
                                            ignore_index=IGNORE, reduction="sum"))  # fmt: skip
        pred = logits.argmax(-1)
        acc["correct"] += int((pred == y)[mask].sum())
        acc["count"] += int(mask.sum())
        names = self._bio_label_names()
        if names is not None:
            for row_y, row_p, n in zip(y.tolist(), pred.tolist(), lengths.tolist(), strict=True):
                acc["true"].append([names[i] for i in row_y[:n]])
                acc["pred"].append([names[i] for i in row_p[:n]])

    def validation_metrics(self, datamodule: Any) -> set[str]:
        names = getattr(datamodule, "label_names", None)
        bio = bool(names) and any(n.startswith("B-") for n in names)
        return {"loss", "acc"} | ({"entity_f1", "entity_precision", "entity_recall"} if bio else set())

    def _bio_label_names(self) -> list[str] | None:
        """The data module's label names if they are BIO tags (entity scores are computed for those only)."""
        names = getattr(getattr(self.trainer, "datamodule", None), "label_names", None) if self._trainer else None
        return names if names and any(n.startswith("B-") for n in names) else None

    def _log_split(self, stage: str) -> None:
        """The split's metrics from its sums, added over the processes of a multi-process run first (every process
        calls this, with or without batches of its own); the logged values are then the same in every process."""
        from rnnlab.runtime.distributed import all_reduce_sum

        acc = self._eval.pop(stage, None) or {"nll": 0.0, "correct": 0, "count": 0, "true": [], "pred": []}
        local = [acc["nll"], acc["correct"], acc["count"], *entity_counts(acc["true"], acc["pred"])]
        nll, correct, count, tp, n_pred, n_true = all_reduce_sum(local, self.device)
        if not count:
            return
        # sync_dist: the values are equal everywhere already; it tells Lightning so (and costs one all-reduce)
        self.log(f"{stage}/loss", nll / count, prog_bar=stage == "val", sync_dist=True)
        self.log(f"{stage}/acc", correct / count, prog_bar=stage == "val", sync_dist=True)
        if self._bio_label_names() is not None:
            precision, recall, f1 = scores_from_counts(tp, n_pred, n_true)
            self.log(f"{stage}/entity_f1", f1, prog_bar=stage == "val", sync_dist=True)
            self.log(f"{stage}/entity_precision", precision, sync_dist=True)
            self.log(f"{stage}/entity_recall", recall, sync_dist=True)

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        self._evaluate(batch, "val")

    def test_step(self, batch: Any, batch_idx: int) -> None:
        self._evaluate(batch, "test")

    def on_validation_epoch_end(self) -> None:
        self._log_split("val")

    def on_test_epoch_end(self) -> None:
        self._log_split("test")
