"""task=anomaly: time-series anomaly detection by next-step prediction error.

**Model** (a prediction-error detector, not an autoencoder): a recurrent network reads a window of the normalized
series and predicts, at every step, the next value: z_hat_{t+1} = W h_t + b (a per-step head of one unit). It is
trained with MSE on the training split's windows that hold no labelled anomaly (rnnlab.data.anomaly): it learns
normal behaviour only. The objective is the MSE over every step of a window, 1/(B W) sum (z_hat - z)^2 (F.mse_loss;
rnnlab.models.numpy.losses.mse on the NumPy backend), logged as train/loss.

**Score.** Every step t of the validation and test splits is predicted from the W steps before it; its error is
e_t = z_hat_t - z_t in units of the training split's standard deviation. The score of step t is the root mean
square of the errors of the last ``task.score_window`` = k scored steps, score_t = sqrt(mean(e_{t-k+1..t}^2))
(k = 1: |e_t|; fewer at the start of a split). ``{val,test}/loss`` is the mean of e_t^2 over the split's unlabelled
scored steps: how well normal behaviour is predicted (the monitor, mode min).

**Threshold** (chosen on validation, after every validation): a step is flagged when score_t >= threshold. When
the validation split holds labelled anomalies, the threshold is the score value that maximizes the validation F1
(every distinct validation score is a candidate; ties go to the highest threshold, i.e. the fewest flags). When it
holds none (data=mitdb, or an unlabelled CSV), the threshold is the smallest number above every validation score:
no normal validation step is flagged. The test split is flagged with that threshold.

**Metrics**, per step (every scored step is one sample; an event of L labelled steps counts L times), over a
split's scored steps: precision = TP / (TP + FP), recall = TP / (TP + FN), F1 = 2 P R / (P + R) (each 0 when its
denominator is 0, as scikit-learn's ``zero_division=0``), and AUROC, the threshold-free probability that a random
labelled step scores above a random unlabelled one (ties count one half: the Mann-Whitney statistic, as
scikit-learn's ``roc_auc_score``). Logged as ``{val,test}/precision``, ``/recall``, ``/f1``, ``/auroc`` and
``/threshold`` for splits that hold labelled anomalies (AUROC also needs unlabelled steps).

**Baseline**, on the same split and steps: a rolling z-score detector, z_t = (v_t - mean(v_{t-w..t-1})) /
std(v_{t-w..t-1}) over the w steps before t (population std), scored as the model is (root mean square over the
last k steps, so both detectors see the same ``task.score_window``). Its window w is chosen among
``task.baseline_windows`` and its threshold by the same rule, on validation: the (w, threshold) of the highest
validation F1 (ties: the first window); without labelled validation anomalies, the first window and the
no-flag threshold. Logged as ``{val,test}/baseline_precision``, ``_recall``, ``_f1``, ``_auroc``.

After every validation (``val/anomaly``) and after testing (``test/anomaly``) a picture of the split goes to
TensorBoard and the run's figures: the series with its labelled anomalies shaded and the flagged steps marked, and
below it the score and the threshold. The threshold, the baseline's choice and the series' normalization are kept
in every checkpoint, so ``score_series`` scores a raw series from a reloaded model.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from rnnlab.tasks.base import RecurrentTask
from rnnlab.tasks.objectives import MSE


# ------------------------------------------------------------------------------------------------ metrics
def binary_metrics(flags: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    """Precision, recall and F1 of 0/1 flags against 0/1 labels (0 where a denominator is 0)."""
    f = np.asarray(flags, dtype=bool)
    y = np.asarray(labels, dtype=bool)
    tp, fp, fn = int(np.sum(f & y)), int(np.sum(f & ~y)), int(np.sum(~f & y))
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * tp / (2 * tp + fp + fn) if tp else 0.0
    return {"precision": precision, "recall": recall, "f1": f1}


def auroc(scores: np.ndarray, labels: np.ndarray) -> float:
    """Area under the ROC curve: (sum of the positives' ranks - P (P + 1) / 2) / (P N), with tied scores given
    their average rank; NaN without positives or negatives."""
    from scipy.stats import rankdata

    s = np.asarray(scores, dtype=np.float64)
    y = np.asarray(labels, dtype=bool)
    p, n = int(y.sum()), int((~y).sum())
    if p == 0 or n == 0:
        return float("nan")
    ranks = rankdata(s)  # average ranks for ties
    return float((ranks[y].sum() - p * (p + 1) / 2) / (p * n))


def best_threshold(scores: np.ndarray, labels: np.ndarray | None) -> float:
    """The threshold (flag = score >= threshold) of the highest F1 over every distinct score (ties: the highest
    threshold); without labelled steps, the smallest number above every score (nothing flagged)."""
    s = np.asarray(scores, dtype=np.float64)
    none_flagged = float(np.nextafter(s.max(), np.inf)) if len(s) else float("inf")
    if labels is None or not np.any(labels):
        return none_flagged
    y = np.asarray(labels, dtype=bool)
    order = np.argsort(-s, kind="stable")
    s_sorted, y_sorted = s[order], y[order]
    tp = np.cumsum(y_sorted)
    fp = np.cumsum(~y_sorted)
    last = np.r_[s_sorted[1:] != s_sorted[:-1], True]  # the last index of every group of tied scores
    tp, fp, values = tp[last], fp[last], s_sorted[last]  # flags = score >= value: every index up to it
    f1 = 2 * tp / (2 * tp + fp + (y.sum() - tp))
    return float(values[int(np.argmax(f1))])  # argmax: the first maximum, i.e. the highest threshold


def trailing_rms(errors: np.ndarray, k: int) -> np.ndarray:
    """sqrt(mean of the squares of the last k values) at every position (fewer at the start)."""
    e2 = np.square(np.asarray(errors, dtype=np.float64))
    padded = np.concatenate([np.zeros(k - 1), e2])
    sums = np.lib.stride_tricks.sliding_window_view(padded, k).sum(axis=1)  # each sum in full: no running total
    return np.sqrt(sums / np.minimum(np.arange(1, len(e2) + 1), k))


def rolling_zscores(z: np.ndarray, window: int) -> np.ndarray:
    """(z_t - mean(z_{t-w..t-1})) / std(z_{t-w..t-1}) for every t >= w (NaN before; a flat stretch, std 0, gives
    0 when z_t equals its mean and a large value otherwise)."""
    x = np.asarray(z, dtype=np.float64)
    out = np.full(len(x), np.nan)
    if len(x) <= window:
        return out
    past = np.lib.stride_tricks.sliding_window_view(x[:-1], window)  # row i: x[i .. i + w), the w steps before i + w
    mean = past.mean(axis=1)
    std = past.std(axis=1)
    t = np.arange(window, len(x))
    dev = x[t] - mean
    out[t] = np.where(std > 1e-12, dev / np.maximum(std, 1e-12), np.where(np.abs(dev) > 1e-12, 1e12, 0.0))
    return out


def detection_metrics(scores: np.ndarray, threshold: float, labels: np.ndarray | None) -> dict[str, float]:
    """precision, recall, f1 at the threshold and auroc (with the threshold), or {} without labelled steps."""
    if labels is None or not np.any(labels):
        return {}
    metrics = binary_metrics(np.asarray(scores) >= threshold, labels)
    value = auroc(scores, labels)
    if np.isfinite(value):
        metrics["auroc"] = value
    return metrics


class AnomalyTask(RecurrentTask):
    """Logs train/loss and, per split, {val,test}/{loss, precision, recall, f1, auroc, threshold} and the
    baseline's {val,test}/baseline_{precision, recall, f1, auroc} (module docstring). ``series`` (the data module's
    ``series_info()``) and ``detector`` (the thresholds and the baseline's window) go into every checkpoint."""

    head = "per_step"
    objective = MSE()
    predict_input = "csv"  # rnnlab-predict: a CSV series in, every step's score and flag out as CSV
    predict_format = "csv"

    def __init__(self, *args: Any, series: dict[str, Any] | None = None, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.series = series
        self.detector: dict[str, Any] = {}
        self._outputs: dict[str, list[tuple[np.ndarray, np.ndarray]]] = {"val": [], "test": []}

    @property
    def score_window(self) -> int:
        return int(self.hparams.task.get("score_window", 1))

    # ------------------------------------------------------------------------------------- what a batch holds
    def net_inputs(self, batch: Any) -> tuple[Any, ...]:
        return batch[0], None

    def batch_targets(self, batch: Any) -> torch.Tensor:
        return batch[1]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Next-value predictions [B, W, 1] for normalized windows x [B, W, 1] (either backend)."""
        out = self.predict((x, None))[0]
        return out.reshape(x.shape[0], x.shape[1], 1)

    # ------------------------------------------------------------------------------------------- evaluation
    def _evaluate(self, batch: Any, stage: str) -> None:
        x, y, t = batch
        err = (self(x)[:, -1, 0] - y[:, -1, 0]).detach().cpu().double().numpy()
        self._outputs[stage].append((t.detach().cpu().numpy().astype(np.int64), err))

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        self._evaluate(batch, "val")

    def test_step(self, batch: Any, batch_idx: int) -> None:
        self._evaluate(batch, "test")

    def validation_metrics(self, datamodule: Any) -> set[str]:
        names = {"loss"}
        counts = getattr(datamodule, "event_counts", None) or {}
        if counts.get("val", {}).get("labelled_steps", 0):
            names |= {"precision", "recall", "f1", "threshold"}
            names |= {f"baseline_{m}" for m in ("precision", "recall", "f1")}
            if counts["val"]["labelled_steps"] < counts["val"]["steps"]:
                names |= {"auroc", "baseline_auroc"}
        return names

    def _split_errors(self, stage: str) -> tuple[np.ndarray, np.ndarray]:
        """(steps, errors) of the split in time order, from every process."""
        from rnnlab.runtime.distributed import gather_rows

        outputs = self._outputs[stage]
        self._outputs[stage] = []
        steps = np.concatenate([o[0] for o in outputs]) if outputs else np.zeros(0, np.int64)
        errors = np.concatenate([o[1] for o in outputs]) if outputs else np.zeros(0)
        steps, errors = gather_rows(steps, self.device), gather_rows(errors, self.device)
        order = np.argsort(steps, kind="stable")
        return steps[order], errors[order]

    def _baseline_scores(self, z: np.ndarray, window: int, steps: np.ndarray) -> np.ndarray:
        zs = rolling_zscores(z, window)[steps]
        return trailing_rms(np.nan_to_num(zs, nan=0.0), self.score_window)

    def choose_baseline(self, z: np.ndarray, steps: np.ndarray, labels: np.ndarray | None) -> tuple[int, float]:
        """(window, threshold) of the rolling z-score detector with the highest F1 on these (validation) steps;
        the first window and the no-flag threshold without labelled steps."""
        windows = [int(w) for w in self.hparams.task.get("baseline_windows", [64])]
        usable = [w for w in windows if len(steps) and w <= int(steps[0])] or [min(windows)]
        if labels is None or not np.any(labels):
            window = usable[0]
            return window, best_threshold(self._baseline_scores(z, window, steps), None)
        best: tuple[float, int, float] | None = None
        for window in usable:
            scores = self._baseline_scores(z, window, steps)
            threshold = best_threshold(scores, labels)
            f1 = binary_metrics(scores >= threshold, labels)["f1"]
            if best is None or f1 > best[0]:
                best = (f1, window, threshold)
        assert best is not None
        return best[1], best[2]

    def _finish_split(self, stage: str) -> dict[str, Any] | None:
        steps, errors = self._split_errors(stage)
        datamodule = self.trainer.datamodule if self._trainer is not None else None
        if not len(steps) or datamodule is None:
            return None
        labels = None if datamodule.labels is None else datamodule.labels[steps]
        scores = trailing_rms(errors, self.score_window)
        normal = np.ones(len(steps), bool) if labels is None else labels == 0
        metrics: dict[str, float] = {"loss": float(np.mean(errors[normal] ** 2)) if normal.any() else float("nan")}
        if stage == "val" and self.trainer.sanity_checking:  # a few batches: no threshold is chosen on them
            return None
        if stage == "val":
            window, base_threshold = self.choose_baseline(datamodule.z, steps, labels)
            self.detector = {
                "threshold": best_threshold(scores, labels),
                "baseline_window": window,
                "baseline_threshold": base_threshold,
            }
        if not self.detector:  # testing a model that was never validated: choose on the validation split now
            raise RuntimeError("task=anomaly: the threshold is chosen on validation; run validation before testing")
        threshold = self.detector["threshold"]
        base_scores = self._baseline_scores(datamodule.z, self.detector["baseline_window"], steps)
        own = detection_metrics(scores, threshold, labels)
        if own:
            metrics.update(own, threshold=threshold)
            base = detection_metrics(base_scores, self.detector["baseline_threshold"], labels)
            metrics.update({f"baseline_{k}": v for k, v in base.items()})
        for name, value in metrics.items():  # sync_dist: equal everywhere already; tells Lightning so
            self.log(f"{stage}/{name}", value, prog_bar=stage == "val" and name in ("loss", "f1"), sync_dist=True)
        return {"steps": steps, "scores": scores, "labels": labels, "threshold": threshold, "metrics": metrics}

    def on_validation_epoch_end(self) -> None:
        results = self._finish_split("val")
        if results is not None:
            self._picture("val", results)

    def on_test_epoch_end(self) -> None:
        results = self._finish_split("test")
        if results is not None:
            self._picture("test", results)

    def _picture(self, stage: str, results: dict[str, Any]) -> None:
        from rnnlab.plots import log_figure

        values = self.trainer.datamodule.values[results["steps"]]
        log_figure(self, f"{stage}/anomaly", self.plot_anomalies(stage, values, results))

    def plot_anomalies(self, stage: str, values: np.ndarray, results: dict[str, Any]) -> Any:
        """The series (labelled anomalies shaded, flagged steps marked) over the score and the threshold."""
        from rnnlab.data.anomaly import runs_of
        from rnnlab.plots import new_figure

        steps, scores, labels, threshold = results["steps"], results["scores"], results["labels"], results["threshold"]
        flagged = scores >= threshold
        fig = new_figure(10.0, 5.0)
        top, bottom = fig.subplots(2, 1, sharex=True, height_ratios=(3, 2))
        top.plot(steps, values, color="black", lw=0.8, label="series")
        for i, (start, stop) in enumerate(runs_of(labels) if labels is not None else []):
            for ax in (top, bottom):
                ax.axvspan(steps[start] - 0.5, steps[stop - 1] + 0.5, color="tab:orange", alpha=0.25,
                           label="labelled anomaly" if i == 0 and ax is top else None)  # fmt: skip
        top.scatter(steps[flagged], values[flagged], s=9, color="tab:red", zorder=3, label="flagged")
        top.legend(loc="upper left", fontsize=8)
        name = (self.series or {}).get("data", "series")
        f1 = results["metrics"].get("f1")
        top.set_title(f"{stage}: {name}, step {self.global_step}" + (f", F1 {f1:.3f}" if f1 is not None else ""))
        bottom.plot(steps, scores, color="tab:blue", lw=0.8, label="score (prediction error)")
        if np.isfinite(threshold):
            bottom.axhline(threshold, color="tab:red", ls="--", lw=1.0, label=f"threshold {threshold:.3g}")
        bottom.set_xlabel("step")
        bottom.legend(loc="upper left", fontsize=8)
        return fig

    # --------------------------------------------------------------------------------- scoring a raw series
    @torch.no_grad()
    def score_series(self, values: np.ndarray, batch_size: int = 256) -> dict[str, np.ndarray]:
        """Scores and flags for every step of a raw 1-D series (original units), with this model, its training
        normalization and its validation threshold: {"score": [n] float64 (NaN for the first W steps, which have
        no full window), "flag": [n] bool}. For rnnlab-predict."""
        if not self.series or "threshold" not in self.detector:
            raise RuntimeError("score_series needs a trained model (its normalization and threshold)")
        v = np.asarray(values, dtype=np.float64)
        if v.ndim != 1:
            raise ValueError(f"score_series takes a 1-D series, got shape {v.shape}")
        window = int(self.series["window"])
        # float32, as the data module holds the series (rnnlab.data.anomaly.NextStepWindows): the same inputs
        z = ((v - float(self.series["mean"])) / float(self.series["std"])).astype(np.float32).astype(np.float64)
        ends = np.arange(window, len(v))
        errors = np.zeros(len(ends))
        params = list(self.parameters())
        dtype = params[0].dtype if params else torch.float64
        was_training = self.training
        self.eval()
        for lo in range(0, len(ends), batch_size):
            e = ends[lo : lo + batch_size]
            rows = e[:, None] - window + np.arange(window)
            x = torch.from_numpy(z[rows][..., None]).to(dtype)
            errors[lo : lo + batch_size] = self(x)[:, -1, 0].double().cpu().numpy() - z[e]
        self.train(was_training)
        score = np.full(len(v), np.nan)
        score[ends] = trailing_rms(errors, self.score_window)
        flag = np.zeros(len(v), bool)
        flag[ends] = score[ends] >= self.detector["threshold"]
        return {"score": score, "flag": flag}

    def predict_records(self, frame: Any) -> list[dict[str, Any]]:
        """rnnlab-predict: the score and flag of every step of a series given as a table (a pandas DataFrame read
        from CSV), in time order, with ``score_series`` (this model, its training normalization, its validation
        threshold). The values are the training data's value column when the table has it (``data.value_column``;
        ``data`` for mitdb, ``temp`` for anomaly_injected), otherwise its only numeric column. One record per row:
        its number (0-based, the header not counted), the value, the score (empty for the first ``data.window``
        rows, which have no full window before them) and the flag (1: anomalous); a label column of the training
        data's name is passed through, so flags and labels can be compared."""
        import pandas as pd

        from rnnlab.tasks.inputs import InputError

        series = self.series or {}
        if "threshold" not in self.detector:
            raise InputError("ckpt_path: this task=anomaly checkpoint has no validation threshold yet (it was saved "
                             "before its first validation); use a checkpoint written after one")  # fmt: skip
        column, label = series.get("value_column"), series.get("label_column")
        if column not in frame.columns:
            numeric = [c for c in frame.columns if c != label and pd.api.types.is_numeric_dtype(frame[c])]
            if len(numeric) != 1:
                raise InputError(f"input: no column {column!r} (the training data's values) and not one numeric "
                                 f"column to take instead; columns: {', '.join(map(str, frame.columns))}")  # fmt: skip
            column = numeric[0]
        values = pd.to_numeric(frame[column], errors="coerce").to_numpy(np.float64)
        bad = np.flatnonzero(~np.isfinite(values))
        if len(bad):
            raise InputError(f"input: column {column!r}, data row {bad[0] + 1}: {frame[column].iloc[bad[0]]!r} is "
                             "not a finite number")  # fmt: skip
        window = int(series["window"])
        if len(values) <= window:
            raise InputError(f"input: {len(values)} data rows; the model scores a step from the {window} before it, "
                             f"so it needs more than {window}")  # fmt: skip
        scored = self.score_series(values)
        labels = frame[label].tolist() if label is not None and label in frame.columns else None
        records = []
        for i, (value, score, flag) in enumerate(zip(values, scored["score"], scored["flag"], strict=True)):
            record = {"row": i, str(column): float(value), "score": float(score) if np.isfinite(score) else None,
                      "flag": int(flag)}  # fmt: skip
            if labels is not None:
                record[str(label)] = labels[i]
            records.append(record)
        return records

    # ----------------------------------------------------------------------------------------- checkpoints
    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        super().on_save_checkpoint(checkpoint)
        checkpoint["anomaly_detector"] = dict(self.detector)

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        super().on_load_checkpoint(checkpoint)
        self.detector = dict(checkpoint.get("anomaly_detector", {}))
