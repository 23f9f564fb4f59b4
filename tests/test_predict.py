"""rnnlab-predict: checkpoints of both backends applied to new inputs, checked against what the task's own forward,
decoding and evaluation compute for the same inputs; both output formats, standard input, and every one-line
error."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import tomllib
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import torch

from rnnlab import predict
from rnnlab.data.timeseries import AIRLINE_CSV, derive_features, load_airline, load_stocks, vega_file
from rnnlab.tasks.inputs import InputError, read_lines
from rnnlab.train import train

pytestmark = pytest.mark.cli
ROOT = Path(__file__).resolve().parents[1]
COMMON = ("trainer.max_steps=4", "trainer.max_epochs=null", "trainer.limit_val_batches=1",
          "trainer.limit_test_batches=1", "logger=csv", "seed=3")  # fmt: skip
RUNS = {
    "classify_torch": ("task=classify", "data=synthetic_text", "data.num_samples=300", "data.batch_size=16",
                       "model.hidden_size=8", "model.embed_dim=4", "trainer.precision=64", "model.backend=torch"),
    "classify_numpy": ("task=classify", "data=synthetic_text", "data.num_samples=300", "data.batch_size=16",
                       "model.hidden_size=8", "model.embed_dim=4", "trainer.precision=64", "model.backend=numpy"),
    "tag": ("task=tag", "data=ner_synth", "data.num_train=64", "data.num_val=16", "data.num_test=16",
            "data.batch_size=16", "model.hidden_size=8", "model.embed_dim=4", "model.backend=numpy"),
    "seq2seq": ("task=seq2seq", "data=dates", "data.num_samples=200", "data.batch_size=16", "model.hidden_size=8",
                "model.embed_dim=4", "model.attention=dot", "task.attention_examples=0", "task.beam_size=2",
                "task.max_decode_len=12", "model.backend=torch"),
    "forecast": ("task=forecast", "data=airline", "model.hidden_size=6", "model.backend=numpy"),
}  # fmt: skip
CLASSIFY_TEXT = "abcabcaaab\nhhhgggbbbb\nbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbba\n"
TAG_TEXT = "Dr. Ada Smith visited Paris .\nThe Bank of Japan met in May .\n"
DATES_TEXT = "3 March 2021\n12/25/1999\n14.03.21\n"


@pytest.fixture(scope="module")
def runs(tmp_path_factory, compose_factory) -> dict[str, SimpleNamespace]:
    """Tiny trained runs (a few steps each): their checkpoint and config."""
    root = tmp_path_factory.mktemp("predict")
    out = {}
    for name, overrides in RUNS.items():
        cfg = compose_factory([*overrides, *COMMON], root / name)
        train(cfg)
        out[name] = SimpleNamespace(ckpt=root / name / "checkpoints" / "last.ckpt", cfg=cfg)
    return out


def run_main(capsys, *args: str, stdin: str | None = None, monkeypatch=None) -> tuple[int, str, str]:
    """rnnlab.predict.main in this process: (exit status, stdout, stderr)."""
    if stdin is not None:
        monkeypatch.setattr(sys, "stdin", SimpleNamespace(buffer=io.BytesIO(stdin.encode())))
    try:
        predict.main(list(args))
        code = 0
    except SystemExit as exit:
        code = int(exit.code or 0)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def jsonl(capsys, ckpt: Path, path: Path) -> list[dict]:
    code, out, err = run_main(capsys, f"ckpt_path={ckpt}", f"input={path}", "format=jsonl")
    assert code == 0, err
    return [json.loads(line) for line in out.splitlines()]


def load(ckpt: Path):
    return predict.load_predictor(str(ckpt))


# ------------------------------------------------------------------------------------------------ classify
def test_classify_probabilities_are_the_softmax_of_the_logits_on_both_backends(runs, capsys, tmp_path):
    path = tmp_path / "in.txt"
    path.write_text(CLASSIFY_TEXT)
    records = {b: jsonl(capsys, runs[f"classify_{b}"].ckpt, path) for b in ("torch", "numpy")}
    lines = CLASSIFY_TEXT.splitlines()
    for backend, recs in records.items():
        model = load(runs[f"classify_{backend}"].ckpt)
        assert [r["line"] for r in recs] == [1, 2, 3]
        assert [r["text"] for r in recs] == lines
        for rec, text in zip(recs, lines, strict=True):
            x = torch.as_tensor(model.vocab.encode(text))[None]  # one line alone: no padding
            with torch.no_grad():
                expected = torch.softmax(model(x, torch.tensor([len(text)])).double(), -1)[0].numpy()
            assert list(rec["p"]) == ["a", "b"]  # data=synthetic_text's classes: the letter that occurs most
            np.testing.assert_allclose(list(rec["p"].values()), expected, rtol=1e-12, atol=0)
            assert rec["label"] == "ab"[int(expected.argmax())]
    # the same float64 run on both backends: the same labels and probabilities
    assert [r["label"] for r in records["torch"]] == [r["label"] for r in records["numpy"]]
    for t, n in zip(records["torch"], records["numpy"], strict=True):
        np.testing.assert_allclose(list(t["p"].values()), list(n["p"].values()), rtol=1e-10, atol=0)


def test_classify_table_and_stdin(runs, capsys, monkeypatch):
    code, out, err = run_main(capsys, f"ckpt_path={runs['classify_numpy'].ckpt}", "input=-", stdin=CLASSIFY_TEXT,
                              monkeypatch=monkeypatch)  # fmt: skip
    assert code == 0, err
    header, *rows = out.splitlines()
    assert header.split() == ["line", "text", "label", "p_a", "p_b"]
    assert len(rows) == 3
    first = rows[0].split()
    assert first[:2] == ["1", "abcabcaaab"]
    assert float(first[3]) + float(first[4]) == pytest.approx(1.0, abs=2e-6)  # 6 significant digits each


# ------------------------------------------------------------------------------------------------ tag
def test_tag_labels_are_the_argmax_of_the_evaluation(runs, capsys, tmp_path):
    from rnnlab.data.sequences import LABELS

    path = tmp_path / "in.txt"
    path.write_text(TAG_TEXT)
    records = jsonl(capsys, runs["tag"].ckpt, path)
    model = load(runs["tag"].ckpt)
    unk = model.vocab.stoi["<unk>"]
    for rec, text in zip(records, TAG_TEXT.splitlines(), strict=True):
        words = text.split()
        assert rec["tokens"] == words
        x = torch.tensor([[model.vocab.stoi.get(w, unk) for w in words]])  # unknown words: <unk>, as in training
        with torch.no_grad():
            expected = model(x, torch.tensor([len(words)])).argmax(-1)[0].tolist()
        assert rec["tags"] == [LABELS[i] for i in expected]
    assert "Ada" not in model.vocab.stoi or "Paris" not in model.vocab.stoi  # the input does exercise <unk>

    code, out, err = run_main(capsys, f"ckpt_path={runs['tag'].ckpt}", f"input={path}")
    assert code == 0, err
    header, first, _ = out.splitlines()
    assert header.split() == ["line", "tokens/tags"]
    pairs = first.split()[1:]
    assert [p.rpartition("/")[0] for p in pairs] == TAG_TEXT.splitlines()[0].split()
    assert [p.rpartition("/")[2] for p in pairs] == records[0]["tags"]


# ------------------------------------------------------------------------------------------------ seq2seq
def test_seq2seq_output_is_the_tasks_own_decoding(runs, capsys, tmp_path):
    from rnnlab.data.datamodules import build_datamodule

    path = tmp_path / "in.txt"
    path.write_text(DATES_TEXT)
    records = jsonl(capsys, runs["seq2seq"].ckpt, path)
    model = load(runs["seq2seq"].ckpt)
    assert int(model.hparams.task["beam_size"]) == 2  # the evaluation's decoding is beam search here
    cfg = runs["seq2seq"].cfg
    data = build_datamodule(cfg.data, int(cfg.seed), None)
    data.setup()
    assert model.hparams.predict_info["target_vocab"] == data.target_vocab.itos
    for rec, text in zip(records, DATES_TEXT.splitlines(), strict=True):
        src = torch.tensor([[model.vocab.stoi.get(ch, 3) for ch in text]])  # 3 = <unk>, as in training
        with torch.no_grad():
            (hyp,) = model.decode(src, torch.tensor([len(text)]))
        assert rec["input"] == text
        assert rec["output"] == data.decode_target(hyp)


# ------------------------------------------------------------------------------------------------ forecast
def test_forecast_equals_the_models_forecast_de_normalised(runs, capsys):
    from rnnlab.data.datamodules import build_datamodule

    code, out, err = run_main(capsys, f"ckpt_path={runs['forecast'].ckpt}", f"input={AIRLINE_CSV}")  # CSV default
    assert code == 0, err
    table = pd.read_csv(io.StringIO(out))
    assert list(table.columns) == ["origin", "month", "step", "target", "prediction"]
    assert len(table) == (144 - 12 + 1) * 6  # every origin from the 12th month on, 6 months ahead
    assert table["origin"].iloc[0] == 11
    assert table["month"].iloc[0] == "1949-12"
    # the test split's windows, as the task's evaluation reads them: the same forecasts in original units
    cfg = runs["forecast"].cfg
    data = build_datamodule(cfg.data, int(cfg.seed), None)
    data.setup()
    test = data.splits["test"]
    x, _ = test.collate(list(range(len(test))))
    model = load(runs["forecast"].ckpt)
    with torch.no_grad():
        expected = model.denormalize(model(x).double().numpy())[:, :, 0]  # [windows, horizon]
    start = data.bounds["test"][0]
    origins = start + test.starts.numpy() + 11
    got = table.set_index(["origin", "step"])["prediction"]
    predicted = np.array([[got[(int(o), k + 1)] for k in range(6)] for o in origins])
    np.testing.assert_allclose(predicted, expected, rtol=1e-13, atol=0)
    assert np.all((predicted > 50) & (predicted < 2000))  # thousands of passengers, not z-scores


@pytest.mark.unit
def test_derived_columns_equal_the_training_data():
    airline = pd.read_csv(AIRLINE_CSV)
    frame = derive_features("airline", airline, ["passengers", "month_sin", "month_cos"])
    months = np.arange(144) % 12
    np.testing.assert_allclose(frame["month_sin"], np.sin(2 * np.pi * months / 12), atol=1e-15)
    np.testing.assert_allclose(frame["month_cos"], load_airline()["month_cos"].to_numpy(), atol=0)
    raw = pd.read_csv(vega_file("stocks.csv"))
    msft = raw[raw["symbol"] == "MSFT"].reset_index(drop=True)
    derived = derive_features("stocks", msft, ["log_return", "rsi", "macd"])
    expected = load_stocks("MSFT")
    assert len(derived) == len(expected) == len(msft) - 14  # the RSI's first 14 months dropped
    assert derived.index[0] == 14  # rows keep their number in the input
    for name in ("price", "log_return", "rsi", "macd", "macd_signal", "macd_hist"):
        np.testing.assert_array_equal(derived[name].to_numpy(), expected[name].to_numpy(), err_msg=name)


# ------------------------------------------------------------------------------------------------ errors
def one_line(capsys, *args: str) -> str:
    code, out, err = run_main(capsys, *args)
    assert code == 1
    assert out == ""
    lines = err.splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("rnnlab-predict: error: ")
    return lines[0]


def test_bad_inputs_are_one_line(runs, capsys, tmp_path):
    classify, forecast = runs["classify_numpy"].ckpt, runs["forecast"].ckpt
    files = {
        "empty.txt": "",
        "blank.txt": "abc\n\nabd\n",
        "oov.txt": "abc\nabzc\n",
        "copy.txt": "s1 s2\n",
        "short.csv": "month,passengers\n1949-01,112\n1949-02,118\n",
        "nocol.csv": "month,riders\n" + "".join(f"1950-{m:02d},{100 + m}\n" for m in range(1, 13)),
        "nan.csv": "month,passengers\n" + "".join(f"1950-{m:02d},{'x' if m == 5 else 100 + m}\n" for m in range(1, 13)),
        "zero.csv": "month,passengers\n" + "".join(f"1950-{m:02d},{m - 1}\n" for m in range(1, 13)),
        "header.csv": "month,passengers\n",
        "binary.txt": b"ab\n\xff\xfe\n",
    }  # fmt: skip
    for name, content in files.items():
        (tmp_path / name).write_bytes(content if isinstance(content, bytes) else content.encode())
    t = tmp_path
    cases = [
        (("input=x.txt",), "ckpt_path is required"),
        ((f"ckpt_path={classify}",), "input is required"),
        ((f"ckpt_path={t / 'missing.ckpt'}", f"input={t / 'oov.txt'}"), "ckpt_path: file not found"),
        ((f"ckpt_path={t / 'oov.txt'}", f"input={t / 'oov.txt'}"), "ckpt_path: not a checkpoint"),
        ((f"ckpt_path={classify}", f"input={t / 'missing.txt'}"), "input: file not found"),
        ((f"ckpt_path={classify}", f"input={t}"), "input: a directory"),
        ((f"ckpt_path={classify}", f"input={t / 'empty.txt'}"), "empty.txt is empty"),
        ((f"ckpt_path={classify}", f"input={t / 'binary.txt'}"), "is not UTF-8 text (line 2"),
        ((f"ckpt_path={classify}", f"input={t / 'blank.txt'}"), "input line 2: an empty line"),
        ((f"ckpt_path={classify}", f"input={t / 'oov.txt'}"), "input line 2: character 'z' is not in the model's"),
        ((f"ckpt_path={classify}", f"input={t / 'oov.txt'}", "format=xml"), "format must be one of table, jsonl"),
        ((f"ckpt_path={classify}", f"input={t / 'oov.txt'}", "colour=red"), "unknown argument 'colour'"),
        ((f"ckpt_path={forecast}", f"input={t / 'short.csv'}"), "2 data rows, fewer than the window of 12 rows"),
        ((f"ckpt_path={forecast}", f"input={t / 'nocol.csv'}"), "column 'passengers' is missing"),
        ((f"ckpt_path={forecast}", f"input={t / 'nan.csv'}"), "column 'passengers', data row 5: 'x' is not a"),
        ((f"ckpt_path={forecast}", f"input={t / 'zero.csv'}"), "data row 1: the model forecasts ln(passengers)"),
        ((f"ckpt_path={forecast}", f"input={t / 'header.csv'}"), "header.csv has a header but no rows"),
    ]
    for args, expected in cases:
        assert expected in one_line(capsys, *args), args


def test_refused_checkpoints_are_one_line(runs, capsys, tmp_path):
    path = tmp_path / "in.txt"
    path.write_text("abc\n")
    saved = torch.load(runs["classify_numpy"].ckpt, map_location="cpu", weights_only=False)
    saved["hyper_parameters"]["task"]["name"] = "regress"
    torch.save(saved, tmp_path / "regress.ckpt")
    line = one_line(capsys, f"ckpt_path={tmp_path / 'regress.ckpt'}", f"input={path}")
    applies = "rnnlab-predict applies task=anomaly, task=classify, task=forecast, task=seq2seq, task=tag"
    assert f"a task=regress checkpoint; {applies}" in line
    saved["hyper_parameters"]["task"]["name"] = "classify"
    del saved["hyper_parameters"]["predict_info"]  # as written before rnnlab-predict
    torch.save(saved, tmp_path / "old.ckpt")
    line = one_line(capsys, f"ckpt_path={tmp_path / 'old.ckpt'}", f"input={path}")
    assert "task=classify checkpoint does not record how its data reads new inputs" in line
    saved = torch.load(runs["forecast"].ckpt, map_location="cpu", weights_only=False)
    del saved["hyper_parameters"]["series"]["time_column"]
    torch.save(saved, tmp_path / "old_forecast.ckpt")
    line = one_line(capsys, f"ckpt_path={tmp_path / 'old_forecast.ckpt'}", f"input={AIRLINE_CSV}")
    assert "task=forecast checkpoint does not record its data's time column" in line


# ------------------------------------------------------------------------------------------------ the command
def test_the_command_reads_stdin(runs):
    """The real command in a subprocess: JSON lines from standard input (the exit status of a bad input is checked
    in-process above: ``main`` exits 1)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    command = [sys.executable, "-m", "rnnlab.predict", f"ckpt_path={runs['classify_torch'].ckpt}", "input=-"]
    good = subprocess.run([*command, "format=jsonl"], input=CLASSIFY_TEXT, capture_output=True, text=True,
                          timeout=120, env=env)  # fmt: skip
    assert good.returncode == 0, good.stderr
    records = [json.loads(line) for line in good.stdout.splitlines()]
    assert [r["line"] for r in records] == [1, 2, 3]
    assert all(sum(r["p"].values()) == pytest.approx(1.0, abs=1e-12) for r in records)


def test_help_is_light_and_the_entry_point_resolves():
    probe = ("import sys; from rnnlab.predict import main; main(['--help']); "
             "print('@@', sorted(m for m in ('torch', 'lightning', 'pandas') if m in sys.modules))")  # fmt: skip
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60,
                            env={**os.environ, "PYTHONPATH": str(ROOT)})  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "ckpt_path" in result.stdout
    assert "format=table|jsonl|csv" in result.stdout
    assert result.stdout.strip().endswith("@@ []")
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    module, _, attr = scripts["rnnlab-predict"].partition(":")
    assert getattr(__import__(module, fromlist=[attr]), attr) is predict.main


# ------------------------------------------------------------------------------------------------ pure pieces
@pytest.mark.unit
def test_read_lines_tokenizes_as_the_data_did():
    stoi = {"<pad>": 0, "<unk>": 1, "the": 2, "film": 3, "!": 4}
    reviews = {"tokenizer": "reviews", "unknown": "<unk>", "empty_as_unknown": True, "max_len": 3}
    lines = read_lines(["The FILM<br />rocks!", "...", "???"], reviews | {"max_len": 4}, stoi)
    assert lines[0].tokens == ["the", "film", "rocks", "!"]
    assert lines[0].ids == [2, 3, 1, 4]  # an unknown word is <unk>
    assert read_lines(["the film film film film"], reviews, stoi)[0].ids == [2, 3, 3]  # the first max_len tokens
    assert read_lines(["<br />"], reviews, stoi)[0].ids == [1]  # no token: one <unk>, as in training
    words = {"tokenizer": "words", "unknown": None}
    with pytest.raises(InputError, match=r"input line 2: token 'cinema' is not in the model's vocabulary"):
        read_lines(["the film", "the cinema"], words, stoi)
    with pytest.raises(InputError, match="input line 1: an empty line"):
        read_lines(["  "], words | {"unknown": "<unk>"}, stoi)


@pytest.mark.unit
def test_renderers():
    records = [{"line": 1, "text": "x" * 50, "label": "pos", "p": {"neg": 0.25, "pos": 0.75}},
               {"line": 12, "text": "short", "label": "neg", "p": {"neg": 0.9, "pos": 0.1}}]  # fmt: skip
    table = predict.render_table(records).splitlines()
    assert table[0].split() == ["line", "text", "label", "p_neg", "p_pos"]
    assert table[1].startswith("   1  " + "x" * 39 + "…")  # numbers right-aligned, long text cut
    assert [len(row) for row in table][1:] == [len(table[1])] * 2  # aligned columns
    assert [json.loads(line) for line in predict.render_jsonl(records).splitlines()] == records
    csv = pd.read_csv(io.StringIO(predict.render_csv(records)))
    assert list(csv.columns) == ["line", "text", "label", "p_neg", "p_pos"]
    assert csv["p_pos"].tolist() == [0.75, 0.1]
    tagged = predict.render_table([{"line": 1, "tokens": ["Ada", "met", "Bo"], "tags": ["B-PER", "O", "B-PER"]}])
    assert tagged.splitlines()[1].split() == ["1", "Ada/B-PER", "met/O", "Bo/B-PER"]
