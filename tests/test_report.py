"""rnnlab-report on real runs: a float64 NumPy/torch pair trained in-process, a crashed run, a failed run."""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from rnnlab.report import collect_runs, pair_runs, write_report
from rnnlab.report.cli import main
from rnnlab.report.collect import MARKER, metric_mode, read_curves

pytestmark = pytest.mark.compose

OVERRIDES = ("task=classify", "data=synthetic_text", "data.num_samples=300", "data.batch_size=16", "model=gru",
             "model.hidden_size=8", "model.embed_dim=8", "trainer.max_steps=6", "trainer.limit_train_batches=3",
             "trainer.limit_val_batches=2", "trainer.limit_test_batches=2", "trainer.log_every_n_steps=1",
             "trainer.precision=64", "seed=7")  # fmt: skip
PNG = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def sweep(tmp_path_factory: pytest.TempPathFactory, compose_factory: Any) -> Path:
    """sweep/0_numpy and sweep/1_torch (same config but the backend), 2_crashed (no summary.json), 3_failed."""
    from rnnlab.train import train

    root = tmp_path_factory.mktemp("report") / "sweep"
    for name, backend in (("0_numpy", "numpy"), ("1_torch", "torch")):
        run_dir = root / name
        train(compose_factory([*OVERRIDES, f"model.backend={backend}"], run_dir))
        if not (run_dir / "summary.json").exists():  # stand-in until train() writes its own
            (run_dir / "summary.json").write_text(json.dumps({"status": "completed", "seed": 7}))
    config = (root / "0_numpy" / "config_resolved.yaml").read_text()
    for name in ("2_crashed", "3_failed"):
        (root / name / "csv").mkdir(parents=True)
        (root / name / "config_resolved.yaml").write_text(config)
        (root / name / "csv" / "metrics.csv").write_text("epoch,step,train/loss\n0,2,0.69\n1,4,0.65\n")
    (root / "3_failed" / "summary.json").write_text(json.dumps({"status": "failed", "error": "RuntimeError: boom"}))
    return root


@pytest.fixture(scope="module")
def report(sweep: Path) -> Path:
    runs, curves = collect_runs([sweep])
    return write_report(runs, curves, sweep.parent / "report", title="Test report", command="rnnlab-report sweep")


def digest(directory: Path) -> dict[str, str]:
    return {p.relative_to(directory).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(directory.rglob("*")) if p.is_file()}  # fmt: skip


def siblings(out: Path) -> list[str]:
    return sorted(p.name for p in out.parent.iterdir() if p.name.startswith(f".{out.name}."))


def test_runs_table_lists_every_run(report: Path) -> None:
    runs = pd.read_csv(report / "runs.csv")
    assert list(runs["run"]) == ["0_numpy", "1_torch", "2_crashed", "3_failed"]
    assert list(runs["backend"]) == ["numpy", "torch", "numpy", "numpy"]
    assert list(runs["status"]) == ["completed", "completed", "incomplete", "failed"]
    trained = runs.iloc[:2]
    assert (trained["num_params"] > 0).all()
    assert trained["num_params"].nunique() == 1
    assert (trained["step_ms"] > 0).all()
    assert trained[["val/loss_best", "val/acc_final", "test/acc"]].notna().all().all()
    assert list(runs.loc[2:, "last_step"]) == [4, 4]
    assert list(runs.loc[2:, "last_epoch"]) == [1, 1]
    readme = (report / "README.md").read_text()
    assert readme.startswith("# Test report\n")
    assert "`rnnlab-report sweep`" in readme
    section = readme.split("## Incomplete or failed runs")[1].split("## Figures")[0]
    assert "`2_crashed`: incomplete/failed (no summary.json); last step 4, epoch 1" in section
    assert "`3_failed`: failed; last step 4, epoch 1; error: RuntimeError: boom" in section
    assert "0_numpy" not in section


def test_pairs_float64_backends_coincide(report: Path) -> None:
    pairs = pd.read_csv(report / "pairs.csv")
    assert len(pairs) == 1  # the crashed and failed runs share the config but are not paired
    pair = pairs.iloc[0]
    assert (pair["run_numpy"], pair["run_torch"]) == ("0_numpy", "1_torch")
    assert pair["time_ratio"] > 0
    assert abs(pair["diff val/loss_final"]) < 1e-6
    assert abs(pair["diff val/loss_best"]) < 1e-6
    assert pair["curve_tag"] == "val/loss"
    assert pair["curve_common_steps"] >= 1
    assert pair["curve_max_abs_diff"] < 1e-6
    assert bool(pair["curves_coincide"])
    readme = (report / "README.md").read_text()
    assert "| #0 | #1 | classify | gru |" in readme
    assert "and 1 NumPy/PyTorch pair." in readme


def test_figures_are_pngs_linked_from_readme(report: Path) -> None:
    from matplotlib.image import imread

    readme = (report / "README.md").read_text()
    pngs = sorted((report / "figures").rglob("*.png"))
    names = {p.relative_to(report).as_posix() for p in pngs}
    assert {"figures/curves_classify.png", "figures/step_time.png"} <= names
    assert any(n.startswith("figures/runs/00_val_confusion_matrix") for n in names)  # a task picture, copied
    for png in pngs:
        assert png.read_bytes()[:8] == PNG
        assert imread(png).ndim == 3
        assert f"]({png.relative_to(report).as_posix()})" in readme


def test_rerun_replaces_report_identically(sweep: Path, tmp_path: Path) -> None:
    runs, curves = collect_runs([sweep])
    out = tmp_path / "rep"
    write_report(runs, curves, out, html=True)
    first = digest(out)
    (out / "stale.txt").write_text("from an older report")
    write_report(runs, curves, out, html=True)
    assert digest(out) == first  # byte-identical figures and tables, and nothing left of the old report
    assert siblings(out) == []
    assert (out / MARKER).is_file()
    assert "<table>" in (out / "report.html").read_text()


def test_failure_midway_keeps_previous_report(sweep: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import rnnlab.report.figures

    runs, curves = collect_runs([sweep])
    out = write_report(runs, curves, tmp_path / "rep")
    before = digest(out)

    def broken(*args: Any, **kwargs: Any) -> None:
        raise RuntimeError("disk full")

    monkeypatch.setattr(rnnlab.report.figures, "step_time_bars", broken)
    with pytest.raises(RuntimeError, match="disk full"):
        write_report(runs, curves, out, title="never written")
    assert digest(out) == before
    assert siblings(out) == []


def test_cli_writes_report_with_key_value_arguments(
    sweep: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "cli"
    assert main([str(sweep / "0_numpy"), str(sweep / "1_torch"), f"out={out}", "html=true", "title=Two"]) == 0
    captured = capsys.readouterr()
    assert "2 runs, 0 incomplete" in captured.out
    assert captured.err == ""  # no deprecation line
    assert (out / "report.html").is_file()
    assert len(pd.read_csv(out / "pairs.csv")) == 1
    readme = (out / "README.md").read_text()
    assert readme.startswith("# Two\n")
    assert f"`rnnlab-report {sweep / '0_numpy'} {sweep / '1_torch'} out={out} html=true title=Two`" in readme


def test_cli_old_flags_work_with_one_deprecation_line_each(
    sweep: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "old"
    assert main([str(sweep), "--out", str(out), "--html", "--title=Old style"]) == 0
    assert (out / "report.html").is_file()
    assert (out / "README.md").read_text().startswith("# Old style\n")
    assert capsys.readouterr().err.splitlines() == [
        f"rnnlab-report: --out is deprecated and goes in the next release; write out={out}",
        "rnnlab-report: --html is deprecated and goes in the next release; write html=true",
        "rnnlab-report: --title is deprecated and goes in the next release; write title='Old style'",
    ]


def test_cli_parses_key_value_and_refuses_bad_arguments(tmp_path: Path) -> None:
    from rnnlab.report.cli import UsageError, parse

    (tmp_path / "title=x").mkdir()  # the working directory: a directory named like a setting stays a directory
    paths, values = parse(["out=here", "runs", "title=x", "html=no", "--", "--odd", "html=true"])
    assert paths == ["runs", "title=x", "--odd", "html=true"]
    assert (values["out"], values["html"], values["title"]) == ("here", False, "rnnlab report")
    for argv, fragment in ((["runs", "html=maybe"], "html must be true or false, got 'maybe'"),
                           (["runs", "--out"], "--out needs a value; write out=..."),
                           (["runs", "out="], "out= needs a value"),
                           (["runs", "--outt=x"], "unknown option '--outt=x'"),
                           (["out=x"], "no directories given")):  # fmt: skip
        with pytest.raises(UsageError, match=re.escape(fragment)):
            parse(argv)


def test_cli_errors_exit_2_and_write_nothing(sweep: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "out"
    missing = tmp_path / "no_such_sweep"
    assert main([str(sweep), str(missing), f"out={out}"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert str(missing) in err
    (tmp_path / "empty").mkdir()
    assert main([str(tmp_path / "empty"), f"out={out}"]) == 2
    assert "no run directories found" in capsys.readouterr().err
    assert main([str(sweep), f"out={sweep}"]) == 2  # would delete the runs: refused
    assert "not a report" in capsys.readouterr().err
    assert main([str(sweep), f"out={out}", "html=maybe"]) == 2
    assert capsys.readouterr().err == "rnnlab-report: error: html must be true or false, got 'maybe'\n"
    assert not out.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["empty"]


def test_tensorboard_read_when_csv_absent(sweep: Path, tmp_path: Path) -> None:
    run = tmp_path / "tb_only"
    shutil.copytree(sweep / "1_torch" / "tensorboard", run / "tensorboard")
    shutil.copy(sweep / "1_torch" / "config_resolved.yaml", run)
    from_tb, from_csv = read_curves(run), read_curves(sweep / "1_torch")

    def val_loss(curves: pd.DataFrame) -> pd.Series:
        return curves[curves["tag"] == "val/loss"].set_index("step")["value"]

    pd.testing.assert_series_equal(val_loss(from_tb), val_loss(from_csv), rtol=1e-6)  # TB stores float32
    runs, curves = collect_runs([run])
    assert runs.loc[0, "status"] == "incomplete"
    assert pair_runs(runs, curves).empty


def test_summary_values_win_over_csv(sweep: Path, tmp_path: Path) -> None:
    run = tmp_path / "from_summary"
    run.mkdir()
    shutil.copy(sweep / "0_numpy" / "config_resolved.yaml", run)
    summary = {"status": "completed", "seed": 7, "num_params": 123, "step_ms_median": 4.5, "samples_per_s": 99.0,
               "peak_rss_mb": 300.0, "global_step": 6, "fit_metrics": {"val/loss": 0.5}, "backend": "numpy",
               "test_metrics": {"test/acc": 0.9}, "hparams": {"model/cell": "gru", "optimizer/lr": 0.002}}  # fmt: skip
    (run / "summary.json").write_text(json.dumps(summary))
    row = collect_runs([run]).runs.iloc[0]
    assert (row["status"], row["num_params"], row["step_ms"], row["peak_rss_mb"]) == ("completed", 123, 4.5, 300)
    assert (row["val/loss_final"], row["test/acc"], row["last_step"]) == (0.5, 0.9, 6)


@pytest.mark.unit
def test_metric_modes() -> None:
    assert [metric_mode(t) for t in ("val/loss", "val/bpc", "val/mse_baseline", "val/mae")] == ["min"] * 4
    assert [metric_mode(t) for t in ("val/acc", "val/entity_f1", "val/exact_match", "val/auroc")] == ["max"] * 4
    assert metric_mode("val/forecast") is None


@pytest.mark.cli
def test_help_is_light() -> None:
    code = "import sys, rnnlab.report.cli; sys.exit(int(any(m in sys.modules for m in ('pandas', 'matplotlib'))))"
    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0
    script = Path(sys.executable).with_name("rnnlab-report")
    result = subprocess.run([script, "--help"], capture_output=True, text=True, check=False)
    assert result.returncode == 0
    assert result.stdout.splitlines()[0] == "usage: rnnlab-report DIR... [out=DIR] [html=true] [title=T]"
    for key in ("out=", "html=", "title="):
        assert f"\n  {key} " in result.stdout
    assert "--out" not in result.stdout  # the one documented style is key=value


def test_seeds_of_real_runs_are_aggregated_and_paired(tmp_path: Path, compose_factory: Any) -> None:
    """Two seeds on each backend: the Over seeds section and seeds.csv give the mean of the runs' own test metrics,
    the paired section their per-seed difference."""
    from rnnlab.train import train

    root = tmp_path / "seeds"
    for backend in ("numpy", "torch"):
        for seed in (3, 4):
            train(compose_factory([*OVERRIDES, f"model.backend={backend}", f"seed={seed}"], root / f"{backend}_{seed}"))
    tests = {p.parent.name: json.loads(p.read_text())["test_metrics"]["test/loss"] for p in root.glob("*/summary.json")}
    runs, curves = collect_runs([root])
    out = write_report(runs, curves, tmp_path / "report", command="rnnlab-report seeds")
    text = (out / "README.md").read_text()
    assert "## Over seeds" in text
    assert "## NumPy vs PyTorch, paired by seed" in text
    seeds = pd.read_csv(out / "seeds.csv").set_index("backend")
    assert len(seeds) == 2
    assert set(seeds["seeds"]) == {"3,4"}
    for backend in ("numpy", "torch"):
        values = [tests[f"{backend}_3"], tests[f"{backend}_4"]]
        assert seeds.loc[backend, "test/loss mean"] == pytest.approx(sum(values) / 2, rel=1e-12)
        assert seeds.loc[backend, "test/loss sd"] == pytest.approx(abs(values[0] - values[1]) / 2**0.5, rel=1e-9)
    paired = pd.read_csv(out / "seeds_paired.csv")
    diffs = [tests[f"numpy_{s}"] - tests[f"torch_{s}"] for s in (3, 4)]
    assert paired.loc[0, "pairs"] == 2
    assert paired.loc[0, "test/loss diff"] == pytest.approx(sum(diffs) / 2, abs=1e-12)
    assert abs(paired.loc[0, "test/loss diff"]) < 1e-8  # float64: the backends agree to rounding
