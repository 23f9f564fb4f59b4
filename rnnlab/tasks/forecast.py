"""task=forecast: a window of a multivariate series -> the next ``horizon`` values of the target column(s).

**Model** (direct multi-step): y_hat = W h_T + b, with h_T the top layer's final hidden state (both directions'
final states concatenated when bidirectional: ``last_hidden``) and a head of horizon * K units, read as
[horizon, K] (output k * K + j is step k + 1 of target j). Everything is in normalized units
(rnnlab.data.timeseries: z = (v - mean) / std with training statistics).

With ``data.residual=true`` the head forecasts the change from the last observed target instead:
y_hat = z_last + W h_T + b (the persistence forecast plus a learned correction; the MSE gradient with respect to
the head's output is unchanged). With ``data.log_target=true`` the targets are modelled as ln(v), so a trend and
a season that grow with the level (airline passengers) become additive; metrics are reported after exp.

**Loss**: MSE on normalized values, 1/(B horizon K) sum (y_hat - y)^2 (F.mse_loss; rnnlab.models.numpy.losses.mse
on the NumPy backend), logged as train/loss and, over a whole split, {val,test}/loss.

**Metrics** over a whole split, in original units (v = z std + mean), over every window, step and target, in
float64 (e = v_hat - v):

- ``mae`` = mean |e|; ``rmse`` = sqrt(mean e^2);
- ``mape`` = 100 * mean_{v != 0} |e| / |v|, in percent. Actual values equal to 0 are skipped (their percentage
  error is undefined), so on data with many zeros (precipitation) it covers the other values only; near-zero
  values (log returns, temperatures around 0 deg C) make it large and unstable;
- ``mae_persistence``: the MAE of the persistence forecast, every future step = the last observed value of the
  target (the naive baseline a model has to beat).

After every validation a forecast-vs-actual picture (``val/forecast``) goes to TensorBoard and the run's figures.

**Backtest** (data=stocks, test split). At each forecast origin t (every test window, in time order, each period
once) the model's first forecast step gives a predicted return for period t + 1: exp(r_hat) - 1 when the target is
the log return, P_hat_{t+1} / P_t - 1 when it is the price. The strategy is long (holds the stock) over period
t + 1 when that predicted return is > 0 and flat (holds cash, earning 0) otherwise; no costs, no shorting.
``test/backtest_return`` = prod_t (1 + position_t R_{t+1}) - 1 and ``test/buy_hold_return`` = prod_t (1 + R_{t+1})
- 1 over the same periods, with R the actual simple return; ``test/backtest_exposure`` is the fraction of periods
held long. The monitor is val/mae, mode min.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from rnnlab.tasks.regress import RegressTask


def forecast_metrics(pred: np.ndarray, actual: np.ndarray) -> dict[str, float]:
    """MAE, RMSE and MAPE (percent, zero actuals skipped; NaN when every actual is 0) of arrays of one shape."""
    p = np.asarray(pred, dtype=np.float64)
    a = np.asarray(actual, dtype=np.float64)
    err = p - a
    nonzero = a != 0
    mape = float(100.0 * np.mean(np.abs(err[nonzero]) / np.abs(a[nonzero]))) if nonzero.any() else float("nan")
    return {"mae": float(np.mean(np.abs(err))), "rmse": float(np.sqrt(np.mean(err * err))), "mape": mape}


def next_period_returns(
    pred_next: np.ndarray, actual_next: np.ndarray, last: np.ndarray, kind: str
) -> tuple[np.ndarray, np.ndarray]:
    """(predicted, actual) simple returns of the period after each origin, from forecasts of the target ``kind``
    ("log_return" or "price"; ``last`` is the last observed price, used for prices only), in original units."""
    if kind == "log_return":
        return np.expm1(pred_next), np.expm1(actual_next)
    if kind == "price":
        return pred_next / last - 1.0, actual_next / last - 1.0
    raise ValueError(f"no backtest for a forecast of {kind!r}")


def backtest(predicted_return: np.ndarray, actual_return: np.ndarray) -> dict[str, float]:
    """Long/flat: long over a period when its predicted return is > 0, flat otherwise. Compounded returns of the
    strategy and of buy-and-hold over the same periods, and the fraction of periods held long."""
    position = (np.asarray(predicted_return) > 0).astype(np.float64)
    r = np.asarray(actual_return, dtype=np.float64)
    return {
        "backtest_return": float(np.prod(1.0 + position * r) - 1.0),
        "buy_hold_return": float(np.prod(1.0 + r) - 1.0),
        "backtest_exposure": float(position.mean()) if len(position) else float("nan"),
    }


def pd_numeric(column: Any) -> np.ndarray:
    """A table column as float64, NaN where a value is missing or not a number."""
    import pandas as pd

    return pd.to_numeric(column, errors="coerce").to_numpy(np.float64)


class ForecastTask(RegressTask):
    """Logs train/loss and, per split, {val,test}/{loss, mae, rmse, mape, mae_persistence}; on data=stocks also
    test/{backtest_return, buy_hold_return, backtest_exposure}. ``series`` (from the data module's
    ``series_info()``: features, targets, horizon, the training normalization statistics, the backtest kind) is
    saved with the checkpoint, so a reloaded model reports in original units without the data."""

    predict_input = "csv"
    predict_format = "csv"

    def __init__(self, *args: Any, series: dict[str, Any] | None = None, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.series = series
        self._outputs: dict[str, list[tuple[np.ndarray, np.ndarray, np.ndarray]]] = {"val": [], "test": []}

    # ------------------------------------------------------------------------------------------- shapes
    @property
    def num_targets(self) -> int:
        return len(self.series["targets"]) if self.series else 1

    @property
    def horizon(self) -> int:
        return self.spec.num_outputs // self.num_targets

    def prediction_offset(self, x: torch.Tensor) -> torch.Tensor | None:
        """With ``data.residual=true``: the last observed (normalized) targets, repeated for every horizon step, so
        the network forecasts the change from persistence (y_hat = z_last + W h_T + b)."""
        if not (self.series and self.series.get("residual")):
            return None
        index = self.series["target_index"] if self.series else [0]
        return x[:, -1, index].repeat(1, self.horizon)  # output k * K + j is step k + 1 of target j

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Normalized forecasts [B, horizon, K] for normalized windows x [B, window, F] (either backend); the
        loss and the training step are RegressTask's (MSE from the final hidden state)."""
        out = super().forward(x)
        return out.reshape(out.shape[0], self.horizon, self.num_targets)

    # ------------------------------------------------------------------------------------------ evaluation
    def _evaluate(self, batch: Any, stage: str) -> None:
        x, y = batch
        pred = self(x).detach().cpu().double().numpy()
        index = self.series["target_index"] if self.series else [0]
        last = x[:, -1, index].detach().cpu().double().numpy()  # [B, K]: the last observed (normalized) targets
        self._outputs[stage].append((pred, y.detach().cpu().double().numpy(), last))

    def validation_metrics(self, datamodule: Any) -> set[str]:
        return {"loss", "mae", "rmse", "mape", "mae_persistence"}

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        self._evaluate(batch, "val")

    def test_step(self, batch: Any, batch_idx: int) -> None:
        self._evaluate(batch, "test")

    def denormalize(self, z: np.ndarray) -> np.ndarray:
        """Normalized targets [..., K] -> original units (exp of the result with ``data.log_target``)."""
        if not self.series:
            return z
        v = z * np.asarray(self.series["target_std"]) + np.asarray(self.series["target_mean"])
        return np.exp(v) if self.series.get("log_target") else v

    def predict_records(self, frame: Any) -> list[dict[str, Any]]:
        """rnnlab-predict: forecasts from a table (a pandas DataFrame read from CSV) with the training data's
        columns, in time order. Every row from the window's last on is a forecast origin: the model reads the
        ``window`` rows up to it, normalized with the training statistics, and forecasts the ``horizon`` rows
        after it, mapped back to original units (``denormalize``). One record per (origin, step, target): the
        origin's row number in the table (0-based, the header not counted) and, when the table has the data's
        time column, its time."""
        from rnnlab.data.timeseries import derive_features
        from rnnlab.errors import DataError
        from rnnlab.tasks.inputs import InputError

        series = self.series or {}
        if "time_column" not in series:
            raise InputError(
                "ckpt_path: this task=forecast checkpoint does not record its data's time column (it was written "
                "before rnnlab-predict existed); train it again to use it"
            )
        features, targets, window = list(series["features"]), list(series["targets"]), int(series["window"])
        try:
            frame = derive_features(str(series.get("data")), frame, features)
        except DataError as err:
            raise InputError(f"input: {err}") from None
        missing = [c for c in features if c not in frame.columns]
        if missing:
            raise InputError(f"input: column {missing[0]!r} is missing; the model reads the columns "
                             f"{', '.join(features)}")  # fmt: skip
        values = np.empty((len(frame), len(features)))
        for j, name in enumerate(features):
            column = pd_numeric(frame[name])
            bad = np.flatnonzero(~np.isfinite(column))
            if len(bad):
                raise InputError(f"input: column {name!r}, data row {frame.index[bad[0]] + 1}: "
                                 f"{frame[name].iloc[bad[0]]!r} is not a finite number")  # fmt: skip
            values[:, j] = column
        if len(values) < window:
            raise InputError(f"input: {len(values)} data rows, fewer than the window of {window} rows the model reads")
        index = list(series["target_index"])
        if series.get("log_target"):
            low = np.flatnonzero((values[:, index] <= 0).any(axis=1))
            if len(low):
                name = targets[int(np.argmax(values[low[0], index] <= 0))]
                raise InputError(f"input: column {name!r}, data row {frame.index[low[0]] + 1}: the model forecasts "
                                 f"ln({name}), which needs values > 0")  # fmt: skip
            values[:, index] = np.log(values[:, index])
        z = (values - np.asarray(series["feature_mean"])) / np.asarray(series["feature_std"])
        z = torch.from_numpy(z).to(self.input_dtype())
        origins = np.arange(window - 1, len(z))
        time = series.get("time_column")
        times = frame[time].astype(str).tolist() if time in frame.columns else None
        rows = list(frame.index)
        records = []
        for start in range(0, len(origins), 256):
            batch = origins[start : start + 256]
            x = torch.stack([z[o - window + 1 : o + 1] for o in batch]).to(self.device)
            with torch.no_grad():
                pred = self.denormalize(self(x).cpu().double().numpy())
            for o, forecast in zip(batch, pred, strict=True):
                where = {"origin": int(rows[o])} | ({time: times[o]} if times is not None else {})
                for k in range(forecast.shape[0]):
                    for j, name in enumerate(targets):
                        records.append({**where, "step": k + 1, "target": name, "prediction": float(forecast[k, j])})
        return records

    def split_results(self, stage: str) -> dict[str, Any] | None:
        """Concatenated (pred, actual, last) of the split in original units, and its metrics; None when the split
        had no windows. In a multi-process run the windows of every process, in rank order (each evaluates one
        contiguous block of the split: the order of the split); every process calls this and gets the same."""
        from rnnlab.runtime.distributed import gather_rows

        outputs = self._outputs[stage]
        shapes = ((self.horizon, self.num_targets), (self.horizon, self.num_targets), (self.num_targets,))
        pred_z, actual_z, last_z = (
            gather_rows(np.concatenate([o[k] for o in outputs]) if outputs else np.zeros((0, *shape)), self.device)
            for k, shape in enumerate(shapes)
        )
        if not len(pred_z):
            return None
        pred, actual, last = self.denormalize(pred_z), self.denormalize(actual_z), self.denormalize(last_z)
        metrics = {"loss": float(np.mean((pred_z - actual_z) ** 2)), **forecast_metrics(pred, actual)}
        persistence = np.broadcast_to(last[:, None, :], actual.shape)
        metrics["mae_persistence"] = forecast_metrics(persistence, actual)["mae"]
        kind = self.series.get("backtest") if self.series else None
        if stage == "test" and kind:
            predicted_r, actual_r = next_period_returns(pred[:, 0, 0], actual[:, 0, 0], last[:, 0], kind)
            metrics.update(backtest(predicted_r, actual_r))
        return {"pred": pred, "actual": actual, "metrics": metrics}

    def _log_split(self, stage: str) -> dict[str, Any] | None:
        results = self.split_results(stage)
        self._outputs[stage] = []
        if results is None:
            return None
        for name, value in results["metrics"].items():  # sync_dist: equal everywhere already; tells Lightning so
            self.log(f"{stage}/{name}", value, prog_bar=stage == "val" and name == "mae", sync_dist=True)
        return results

    def on_validation_epoch_end(self) -> None:
        results = self._log_split("val")
        if results is None or self._trainer is None or self.trainer.sanity_checking:
            return
        from rnnlab.plots import log_figure

        windows = self.trainer.datamodule.splits["val"] if self.trainer.datamodule is not None else None
        log_figure(self, "val/forecast", self.plot_forecast(results["pred"], results["actual"], windows))

    def on_test_epoch_end(self) -> None:
        self._log_split("test")

    def plot_forecast(self, pred: np.ndarray, actual: np.ndarray, windows: Any = None) -> Any:
        """Actual values of the first target against the one-step-ahead forecasts and, for horizon > 1, the
        forecasts made ``horizon`` steps ahead, each placed at the time it forecasts."""
        from rnnlab.plots import new_figure

        n, horizon = pred.shape[0], pred.shape[1]
        times = [None] * horizon
        if windows is not None and hasattr(windows, "target_times"):
            times = [t[:n] if (t := windows.target_times(k)) is not None else None for k in range(horizon)]

        def at(step: int) -> Any:
            return times[step] if times[step] is not None else np.arange(n) + step

        target = self.series["targets"][0] if self.series else "target"
        fig = new_figure(9.0, 3.8)
        ax = fig.add_subplot()
        # the actual series: every window's first target, then the last window's later ones
        actual_t = np.concatenate([at(0), np.asarray([at(k)[-1] for k in range(1, horizon)], dtype=at(0).dtype)])
        ax.plot(actual_t, np.concatenate([actual[:, 0, 0], actual[-1, 1:, 0]]), color="black", lw=1.4, label="actual")
        ax.plot(at(0), pred[:, 0, 0], color="tab:blue", lw=1.1, label="forecast, 1 step ahead")
        if horizon > 1:
            ax.plot(at(horizon - 1), pred[:, -1, 0], color="tab:orange", lw=1.0, ls="--",
                    label=f"forecast, {horizon} steps ahead")  # fmt: skip
        ax.set_ylabel(target)
        ax.set_title(f"validation forecast vs actual ({target}), step {self.global_step}")
        ax.legend(loc="best", fontsize=8)
        fig.autofmt_xdate()
        return fig
