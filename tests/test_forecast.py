"""task=forecast on data=weather, stocks and airline: the data, the features, windows and normalization, the
metrics and the backtest, both backends, float64 training parity, and one-line errors."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from test_numpy_train import run_recording

from rnnlab.config import validate
from rnnlab.data.timeseries import (
    AIRLINE_CSV,
    ForecastDataModule,
    build_forecast,
    ema,
    load_airline,
    load_stocks,
    load_weather,
    macd,
    rsi,
    split_bounds,
    vega_file,
    wilder_average,
)
from rnnlab.errors import ConfigError, DataError
from rnnlab.tasks.forecast import ForecastTask, backtest, forecast_metrics, next_period_returns
from rnnlab.train import train

pytestmark = pytest.mark.unit

AIRLINE = ("task=forecast", "data=airline", "model.hidden_size=8", "logger=csv")
SMALL = {
    "weather": ("data=weather", "data.window=10", "data.horizon=3"),
    "stocks": ("data=stocks", "data.window=4"),
    "airline": ("data=airline",),
}


# -------------------------------------------------------------------------------------------------- data
def test_airline_csv_values():
    raw = pd.read_csv(AIRLINE_CSV)
    assert list(raw.columns) == ["month", "passengers"]
    assert len(raw) == 144
    assert raw["passengers"].sum() == 40_363
    assert raw["passengers"].iloc[:12].tolist() == [112, 118, 132, 129, 121, 135, 148, 148, 136, 119, 104, 118]
    assert (raw["month"].iloc[0], raw["month"].iloc[-1], raw["passengers"].iloc[-1]) == ("1949-01", "1960-12", 432)
    frame = load_airline()
    assert (frame.index[1:] - frame.index[:-1]).days.max() <= 31  # monthly, no gap
    np.testing.assert_allclose(frame["month_sin"].iloc[[0, 3]], [0.0, 1.0], atol=1e-12)  # January, April


def test_vega_files_are_read_from_the_package():
    weather = load_weather()
    assert len(weather) == 1461
    assert (str(weather.index[0].date()), str(weather.index[-1].date())) == ("2012-01-01", "2015-12-31")
    assert weather.loc["2012-01-02", "precipitation"] == 10.9
    assert weather.loc["2012-01-01", "temp_max"] == 12.8
    aapl = load_stocks("aapl")
    assert len(aapl) == 123 - 14  # the months before the RSI is defined are dropped
    assert str(aapl.index[0].date()) == "2001-03-01"
    assert np.isfinite(aapl.to_numpy()).all()
    raw = pd.read_csv(vega_file("stocks.csv"))
    first = raw[raw.symbol == "AAPL"].price.to_numpy()[13:15]
    assert aapl["log_return"].iloc[0] == pytest.approx(np.log(first[1] / first[0]), rel=1e-12)


def test_rsi_by_hand():
    """Period 2 on 1, 2, 4, 3, 5, 4: changes +1 +2 -1 +2 -1. Averages start as the means of the first two
    changes (gain 1.5, loss 0: RSI 100), then avg = (avg + new) / 2: (0.75, 0.5) -> 60, (1.375, 0.25) -> RS 5.5,
    (0.6875, 0.625) -> RS 1.1."""
    out = rsi(np.array([1.0, 2, 4, 3, 5, 4]), period=2)
    assert np.isnan(out[:2]).all()
    np.testing.assert_allclose(out[2:], [100.0, 60.0, 100 - 100 / 6.5, 100 - 100 / 2.1], rtol=1e-12)
    assert rsi(np.full(5, 3.0), period=2)[-1] == 50.0  # flat prices: neutral


def textbook_ema(x: np.ndarray, a: float, seed: float) -> np.ndarray:
    """E_0 = seed, E_t = a x_t + (1 - a) E_{t-1} over x_1, x_2, ..., written out as a loop."""
    out = [seed]
    for value in x[1:]:
        out.append(a * value + (1 - a) * out[-1])
    return np.array(out)


def test_rsi_matches_wilder_smoothing_as_a_textbook_recurrence():
    """rsi() uses pandas' ewm; the reference here is the recurrence AG_t = ((N - 1) AG_{t-1} + g_t) / N seeded with
    the mean of the first N gains (the loop rnnlab used before pandas, which agreed to 7e-16 on the real data)."""
    prices = 50 * np.exp(np.cumsum(np.random.default_rng(0).normal(0, 0.05, 60)))
    change = np.diff(prices)
    gain, loss = np.maximum(change, 0), np.maximum(-change, 0)

    def wilder(x: np.ndarray) -> np.ndarray:
        out = [x[:14].mean()]
        for value in x[14:]:
            out.append((13 * out[-1] + value) / 14)
        return np.array(out)

    expected = 100 - 100 / (1 + wilder(gain) / wilder(loss))
    out = rsi(prices, 14)
    assert np.isnan(out[:14]).all()
    np.testing.assert_allclose(out[14:], expected, rtol=1e-13)
    np.testing.assert_allclose(wilder_average(gain, 14), wilder(gain), rtol=1e-13)
    # by hand, period 2 on 1, 3, 5, 7: the mean of 1 and 3, then (2 + 5) / 2, then (3.5 + 7) / 2
    assert wilder_average(np.array([1.0, 3, 5, 7]), 2).tolist() == [2.0, 3.5, 5.25]


def test_ema_and_macd():
    # a = 0.5, seeded with the first value (adjust=True would give 2, 3.33, 6; a seed of 0 would give 1, 2.5, 5.25)
    assert ema(np.array([2.0, 4, 8]), span=3).tolist() == [2.0, 3.0, 5.5]
    prices = 20 + np.cumsum(np.random.default_rng(1).normal(0, 1, 80))
    for span in (9, 12, 26):
        a = 2 / (span + 1)
        np.testing.assert_allclose(ema(prices, span), textbook_ema(prices, a, prices[0]), rtol=1e-14)
    line, signal, hist = macd(prices)
    expected_line = textbook_ema(prices, 2 / 13, prices[0]) - textbook_ema(prices, 2 / 27, prices[0])
    expected_signal = textbook_ema(expected_line, 2 / 10, expected_line[0])
    np.testing.assert_allclose(line, expected_line, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(signal, expected_signal, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(hist, expected_line - expected_signal, rtol=1e-12, atol=1e-12)


# --------------------------------------------------------------------------------- windows, normalization
def toy_module(n: int = 50, window: int = 4, horizon: int = 2, stride: int = 3, **kw) -> ForecastDataModule:
    """A series whose column "t" is the row number (so a window tells which rows it came from), "u" = t^2."""
    t = np.arange(n, dtype=np.float64)

    def load() -> pd.DataFrame:
        return pd.DataFrame({"t": t, "u": t**2}, index=pd.date_range("2000-01-01", periods=n, freq="D"))

    dm = ForecastDataModule("toy", load, ["t", "u"], kw.pop("targets", ["t"]), window, horizon, stride,
                            val_fraction=0.2, test_fraction=0.2, batch_size=64, **kw)  # fmt: skip
    dm.setup("fit")
    return dm


def test_windows_horizon_shapes_and_no_leakage():
    dm = toy_module()
    assert dm.bounds == {"train": (0, 30), "val": (30, 40), "test": (40, 50)}
    assert (dm.input_features, dm.num_outputs) == (2, 2)
    mean, std = dm.scaler.mean[0], dm.scaler.std[0]
    for split, (start, stop) in dm.bounds.items():
        ds = dm.splits[split]
        x, y = ds.collate(list(range(len(ds))))
        assert x.shape == (len(ds), 4, 2)
        assert y.shape == (len(ds), 2, 1)
        rows_x = np.rint(x[..., 0].double().numpy() * std + mean)
        rows_y = np.rint(y[..., 0].double().numpy() * std + mean)
        assert rows_x.min() >= start  # every input and target row inside the split
        assert rows_y.max() < stop
        np.testing.assert_array_equal(rows_y[:, 0], rows_x[:, -1] + 1)  # targets follow their window
        np.testing.assert_array_equal(np.diff(rows_x[:, 0]), 3 if split == "train" else 1)  # stride: training only
        assert ds.target_times(1)[0] == np.datetime64("2000-01-01") + np.timedelta64(int(rows_y[0, 1]), "D")
    assert len(dm.splits["train"]) == len(range(0, 30 - 6 + 1, 3))
    assert len(dm.splits["val"]) == len(dm.splits["test"]) == 10 - 6 + 1


def test_normalization_uses_training_rows_only():
    dm = toy_module()
    np.testing.assert_allclose(dm.scaler.mean, [14.5, np.mean(np.arange(30) ** 2)])
    np.testing.assert_allclose(dm.scaler.std[0], np.arange(30).std())
    info = dm.series_info()
    assert info["target_mean"] == [14.5]
    assert info["target_std"] == [pytest.approx(np.arange(30).std())]
    x, _ = dm.splits["test"].collate([0])
    np.testing.assert_allclose(x[0, 0, 0].item(), (40 - 14.5) / np.arange(30).std(), rtol=1e-6)


def test_split_bounds_round_to_rows():
    assert split_bounds(144, 0.2, 0.2) == {"train": (0, 86), "val": (86, 115), "test": (115, 144)}


# ---------------------------------------------------------------------------------------- metrics, backtest
def test_metrics_by_hand():
    """errors 1, -1, 0.5: MAE 2.5/3, RMSE sqrt(2.25/3); MAPE skips the zero actual: (1/1 + 1/5) / 2 = 60 %."""
    m = forecast_metrics(np.array([2.0, 4.0, 0.5]), np.array([1.0, 5.0, 0.0]))
    assert m["mae"] == pytest.approx(2.5 / 3, rel=1e-12)
    assert m["rmse"] == pytest.approx(np.sqrt(0.75), rel=1e-12)
    assert m["mape"] == pytest.approx(60.0, rel=1e-12)


def test_backtest_arithmetic():
    """Long in periods 1 and 3 (predicted > 0), flat in 2: 1.10 * 1.02 - 1; buy and hold 1.10 * 0.95 * 1.02 - 1."""
    result = backtest(np.array([0.1, -0.2, 0.05]), np.array([0.10, -0.05, 0.02]))
    assert result["backtest_return"] == pytest.approx(1.10 * 1.02 - 1, rel=1e-12)
    assert result["buy_hold_return"] == pytest.approx(1.10 * 0.95 * 1.02 - 1, rel=1e-12)
    assert result["backtest_exposure"] == pytest.approx(2 / 3)
    predicted, actual = next_period_returns(np.array([11.0, 9.0]), np.array([12.0, 10.5]), np.array([10.0, 10.0]),
                                            "price")  # fmt: skip
    np.testing.assert_allclose(predicted, [0.1, -0.1])
    np.testing.assert_allclose(actual, [0.2, 0.05])
    predicted, actual = next_period_returns(np.log([1.1]), np.log([0.9]), np.array([np.nan]), "log_return")
    np.testing.assert_allclose([predicted[0], actual[0]], [0.1, -0.1])


# ---------------------------------------------------------------------------------------------- training
@pytest.mark.compose
@pytest.mark.parametrize("backend", ["torch", "numpy"])
@pytest.mark.parametrize("data", sorted(SMALL))
def test_fast_dev_run(compose, recorder, data, backend):
    value = train(compose("task=forecast", *SMALL[data], f"model.backend={backend}", "model.hidden_size=6",
                          "trainer.fast_dev_run=true")).value  # fmt: skip
    assert np.isfinite(value)
    metrics = recorder.runs[-1].test_metrics
    for name in ("loss", "mae", "rmse", "mape", "mae_persistence"):
        assert np.isfinite(metrics[f"test/{name}"]), name
    assert ("test/backtest_return" in metrics) == ("test/buy_hold_return" in metrics) == (data == "stocks")


@pytest.mark.compose
def test_training_parity_on_airline(compose, tmp_path, monkeypatch):
    common = (*AIRLINE, "model=gru", "model.num_layers=2", "data.features=[passengers,month_sin,month_cos]",
              "optimizer=adam", "optimizer.lr=0.01", "trainer.precision=64", "trainer.max_steps=22",
              "trainer.max_epochs=null", "trainer.gradient_clip_val=0.5", "trainer.limit_val_batches=1",
              "seed=5")  # fmt: skip
    losses = {b: run_recording(compose, (*common, f"model.backend={b}"), tmp_path / b, monkeypatch)[0]
              for b in ("torch", "numpy")}  # fmt: skip
    assert len(losses["numpy"]) == 22
    np.testing.assert_allclose(losses["numpy"], losses["torch"], rtol=1e-8, atol=0)
    assert losses["torch"][-1] < losses["torch"][0]


@pytest.mark.compose
def test_metrics_are_in_original_units_and_the_checkpoint_keeps_the_statistics(compose, recorder, tmp_path):
    train(compose(*AIRLINE, "model.backend=numpy", "trainer.max_epochs=1", "trainer.limit_train_batches=3",
                  run_dir=tmp_path))  # fmt: skip
    run = recorder.runs[-1]
    # persistence on the validation months, from the CSV alone: rows 86..114, windows of 12 + 6
    passengers = pd.read_csv(AIRLINE_CSV)["passengers"].to_numpy(np.float64)[86:115]
    errors = [abs(passengers[s + 12 + k] - passengers[s + 11]) for s in range(29 - 18 + 1) for k in range(6)]
    metrics = pd.read_csv(tmp_path / "csv" / "metrics.csv")
    assert metrics["val/mae_persistence"].dropna().iloc[-1] == pytest.approx(np.mean(errors), rel=1e-5)
    assert (tmp_path / "figures" / "val_forecast").is_dir()

    (ckpt,) = (tmp_path / "checkpoints").glob("best-*.ckpt")
    loaded = ForecastTask.load_from_checkpoint(ckpt, map_location="cpu")
    series = loaded.hparams["series"]
    train_rows = pd.read_csv(AIRLINE_CSV)["passengers"].to_numpy(np.float64)[:86]
    assert series["log_target"]  # conf/data/airline.yaml: ln(passengers),
    assert series["residual"]  # forecast as the change from the last month
    assert series["target_mean"] == [pytest.approx(np.log(train_rows).mean(), rel=1e-12)]
    assert series["target_std"] == [pytest.approx(np.log(train_rows).std(), rel=1e-12)]
    x, y = run.datamodule.splits["val"].collate([0, 1])
    pred = loaded.denormalize(loaded(x).double().numpy())
    assert pred.shape == (2, 6, 1)
    assert np.all((pred > 50) & (pred < 1000))  # thousands of passengers, not z-scores
    # test/mae was scored with this checkpoint: recompute it from the reloaded model and the test windows
    test = run.datamodule.splits["test"]
    x, y = test.collate(list(range(len(test))))
    with torch.no_grad():
        pred = loaded.denormalize(loaded(x).double().numpy())
    expected = forecast_metrics(pred, loaded.denormalize(y.double().numpy()))
    assert run.test_metrics["test/mae"] == pytest.approx(expected["mae"], rel=1e-6)  # logged as float32
    assert run.test_metrics["test/rmse"] == pytest.approx(expected["rmse"], rel=1e-6)


@pytest.mark.compose
def test_stocks_buy_and_hold_from_the_prices(compose, recorder):
    train(compose("task=forecast", "data=stocks", "data.ticker=MSFT", "model.hidden_size=6", "trainer.max_epochs=1"))
    metrics = recorder.runs[-1].test_metrics
    raw = pd.read_csv(vega_file("stocks.csv"))
    prices = raw[raw.symbol == "MSFT"].price.to_numpy()[14:]  # the rows the features keep
    start, stop = split_bounds(len(prices), 0.15, 0.2)["test"]
    # windows of 6 months, horizon 1: the origins are test rows 5 .. n-2, the traded months rows 6 .. n-1
    assert metrics["test/buy_hold_return"] == pytest.approx(prices[stop - 1] / prices[start + 5] - 1, rel=1e-6)
    assert metrics["test/backtest_return"] >= -1
    assert 0 <= metrics["test/backtest_exposure"] <= 1


# ---------------------------------------------------------------------------------------------- errors
@pytest.mark.parametrize(
    ("override", "key"),
    [("data.window=0", "data.window"), ("data.horizon=-1", "data.horizon"), ("data.stride=0", "data.stride"),
     ("data.test_fraction=0", "data.test_fraction")],
)  # fmt: skip
def test_bad_values_are_one_line_config_errors(compose, override, key):
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")) as info:
        validate(compose(*AIRLINE, override))
    assert "\n" not in str(info.value)


@pytest.mark.parametrize(
    ("overrides", "fragments"),
    [(("data=stocks", "data.ticker=XYZ"), ["data.ticker=XYZ", "AAPL, AMZN, GOOG, IBM, MSFT"]),
     (("data=airline", "data.window=40"), ["data.window=40", "val split", "data=airline"]),
     (("data=weather", "data.features=[temp_max,snow]"), ["data.features=snow", "precipitation"]),
     (("data=stocks", "data.target=rsi"), ["data.target=rsi", "log_return"])],
)  # fmt: skip
def test_bad_data_is_a_one_line_data_error(compose, overrides, fragments):
    cfg = compose("task=forecast", *overrides)
    validate(cfg)
    with pytest.raises(DataError) as info:
        build_forecast(cfg.data, 0, None, batch_size=8).setup("fit")
    message = str(info.value)
    assert "\n" not in message
    for fragment in fragments:
        assert fragment in message


def test_task_and_data_must_match(compose):
    with pytest.raises(ConfigError, match="task=regress cannot train on data=weather"):
        validate(compose("task=regress", "data=weather"))


def test_forecast_head_layout_is_horizon_by_target():
    """Two targets, horizon 3: six outputs read as [horizon, K] (output k * K + j is step k + 1 of target j)."""
    dm = toy_module(targets=["t", "u"], horizon=3)
    assert dm.num_outputs == 6
    _, y = dm.splits["val"].collate([0])
    rows = np.rint(y[0, :, 0].double().numpy() * dm.scaler.std[0] + dm.scaler.mean[0])
    np.testing.assert_allclose(y[0, :, 1].double().numpy() * dm.scaler.std[1] + dm.scaler.mean[1], rows**2,
                               rtol=1e-5)  # fmt: skip
    assert torch.equal(y.reshape(1, -1)[0, 1::2], y[0, :, 1])


# ------------------------------------------------------------------------------ log targets, residual head
def test_log_target_models_the_logarithm_and_refuses_non_positive_values():
    t = np.arange(50, dtype=np.float64)

    def module(offset: float) -> ForecastDataModule:
        def load() -> pd.DataFrame:
            frame = {"t": t, "u": (t + offset) ** 2}
            return pd.DataFrame(frame, index=pd.date_range("2000-01-01", periods=50, freq="D"))

        return ForecastDataModule("toy", load, ["t", "u"], ["u"], 4, 2, 1, val_fraction=0.2, test_fraction=0.2,
                                  batch_size=8, log_target=True)  # fmt: skip

    dm = module(1.0)
    dm.setup("fit")
    train_u = (t[:30] + 1.0) ** 2
    assert dm.scaler.mean[1] == pytest.approx(np.log(train_u).mean(), rel=1e-12)  # statistics of ln(u), not u
    assert dm.scaler.mean[0] == pytest.approx(t[:30].mean(), rel=1e-12)  # other columns stay as they are
    with pytest.raises(DataError, match=r"data.log_target=true: data=toy column u has values <= 0"):
        module(0.0).setup("fit")  # u = 0 on the first day


@pytest.mark.compose
@pytest.mark.parametrize("backend", ["torch", "numpy"])
def test_a_residual_forecast_with_a_zero_head_is_persistence_in_original_units(compose, recorder, backend):
    """y_hat = z_last + W h + b: with W = 0 and b = 0 every forecast is the last observed month, so once the
    normalization and the logarithm are undone the forecasts are the persistence forecasts, month by month."""
    train(compose(*AIRLINE, f"model.backend={backend}", "trainer.max_steps=2", "trainer.precision=64"))
    run = recorder.runs[-1]
    model = run.model
    if model.hparams.backend == "numpy":
        for name in ("head.weight", "head.bias"):
            model.net.params[name][...] = 0.0
    else:
        with torch.no_grad():
            model.net.head.weight.zero_()
            model.net.head.bias.zero_()
    test = run.datamodule.splits["test"]
    x, _ = test.collate(list(range(len(test))))
    with torch.no_grad():
        pred = model.denormalize(model(x.double()).double().numpy())
    passengers = pd.read_csv(AIRLINE_CSV)["passengers"].to_numpy(np.float64)[115:]  # the 29 test months
    last = passengers[11 : 11 + len(test)]  # the last input month of every test window
    np.testing.assert_allclose(pred, np.broadcast_to(last[:, None, None], pred.shape), rtol=1e-6)  # float32 windows
    assert run.test_metrics["test/mae_persistence"] == pytest.approx(85.25, abs=1e-9)
