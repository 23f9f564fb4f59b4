"""rnnlab-gradcheck: it passes on a built-in cell, and fails, naming the parameter, on a plug-in cell whose backward
has a deliberately wrong sign (from the real command line); with scope=network, the whole network of every task in
the catalogue passes, and a deliberately wrong head or objective gradient fails, naming the parameters."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from rnnlab.registry import TASKS
from rnnlab.specs import datasets_of

pytestmark = pytest.mark.cli

GRADCHECK = Path(sys.executable).parent / "rnnlab-gradcheck"

WRONG_SIGN = """
from rnnlab.cells.rnn import RNNCell
from rnnlab.registry import CELLS


@CELLS.register("wrong_rnn", doc="an Elman RNN whose W_hh gradient has the wrong sign")
class WrongRNN(RNNCell):
    name = "wrong_rnn"

    def backward(self, d_out, d_final, cache, g, dh_norms=None):
        before = g["weight_hh"].copy()
        dA, d0 = super().backward(d_out, d_final, cache, g, dh_norms)
        g["weight_hh"][...] = before - (g["weight_hh"] - before)  # the sign flipped
        return dA, d0
"""


def run(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(GRADCHECK), *args], cwd=cwd, capture_output=True, text=True, timeout=300)


def test_a_builtin_cell_passes(tmp_path):
    result = run("model=lstm", "model.variant=peephole", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "weight_co_l2" in result.stdout  # every layer's peepholes are checked
    assert result.stdout.rstrip().endswith(
        "lstm/peephole: every gradient agrees (autograd <= 1e-10, finite differences <= 1e-06)"
    )


def test_a_wrong_sign_fails_naming_the_parameter(tmp_path):
    (tmp_path / "wrong_cells.py").write_text(textwrap.dedent(WRONG_SIGN))
    result = run("plugins=[wrong_cells]", "model.cell=wrong_rnn", cwd=tmp_path)
    assert result.returncode == 1
    failing = [line.split()[0] for line in result.stdout.splitlines() if line.endswith("FAIL")]
    assert failing
    assert all(name.startswith("weight_hh_l") for name in failing)
    assert result.stderr.strip().startswith("rnnlab-gradcheck: error: wrong_rnn: the backward of weight_hh_l0")


def test_an_unknown_cell_is_one_line(tmp_path):
    result = run("model=lstmm", cwd=tmp_path)
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [
        "rnnlab-gradcheck: error: unknown cell 'lstmm': choose one of gru, lstm, rnn; did you mean lstm?"
    ]


# ------------------------------------------------------------------------------------------- scope=network
# In this process (the unit tier: no Trainer, no command line), so that torch and Lightning load once: every
# registered task on its default data (the first registered data of the kind it accepts, with that data's quick
# overrides: a few chorales rather than the whole corpus), then a few more code paths.
NETWORK_CASES = [
    (task.name, (f"data={data.name}", *data.meta.get("quick", ())))
    for task, data in ((task, datasets_of(task)[0]) for task in TASKS.entries())
] + [
    ("seq2seq", ("data=dates", "model=gru", "model.attention=additive", "task.teacher_forcing=0.5",
                 "model.hidden_size=16")),
    ("seq2seq", ("data=cmudict", "model.attention=dot", "model.num_layers=2", "model.bidirectional=true",
                 "model.hidden_size=16")),
    ("classify", ("data=synthetic_text", "model=gru", "model.num_layers=2", "model.bidirectional=true",
                  "model.hidden_size=16", "model.dropout=0.3")),
]  # fmt: skip


def network_check(capsys, *overrides: str) -> tuple[int, list[str], list[str]]:
    """(exit status, the table's rows split in words, the lines of stderr) of rnnlab-gradcheck scope=network."""
    from rnnlab.gradcheck import main

    code = 0
    try:
        main(["scope=network", *overrides])
    except SystemExit as done:
        code = done.code
    out, err = capsys.readouterr()
    lines = out.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("parameter "))
    rows = [line.split() for line in lines[start + 1 :] if not line.endswith(")")]  # not the closing sentence
    return code, rows, err.strip().splitlines()


@pytest.mark.unit
@pytest.mark.parametrize(("task", "overrides"), NETWORK_CASES, ids=[f"{t}-{'-'.join(o)}" for t, o in NETWORK_CASES])
def test_the_network_of_every_task_passes(capsys, task, overrides):
    code, rows, err = network_check(capsys, f"task={task}", *overrides)
    assert code == 0, err
    names = [row[0] for row in rows]
    assert not [row for row in rows if row[-1] == "FAIL"]
    # every parameter of the network is checked: the recurrent stack's and the output layer's at least
    recurrent = [n for n in names if n.startswith(("rnn.", "encoder.", "decoder."))]
    assert recurrent
    assert any(n.startswith(("head.", "output.")) for n in names)
    if "model.bidirectional=true" in overrides:
        assert any(n.endswith("_reverse") for n in recurrent)
    if "model.attention=additive" in overrides:
        assert {"attention.query.weight", "attention.key.weight", "attention.v.weight"} <= set(names)
    if task not in ("forecast", "regress", "polyphonic", "anomaly"):  # token inputs: the embedding too
        assert any("embedding" in n for n in names)
    else:  # float features: no embedding
        assert not any("embedding" in n for n in names)


@pytest.mark.unit
def test_a_wrong_head_gradient_fails_naming_the_parameter(capsys, monkeypatch):
    """The NumPy head's backward with the sign of its weight gradient flipped: only head.weight fails."""
    from rnnlab.models.numpy.net import NumpyRecurrentNet

    right = NumpyRecurrentNet.head_backward

    def wrong(self, dlogits, cache):
        before = self.grads["head.weight"].copy()
        dx = right(self, dlogits, cache)
        self.grads["head.weight"][...] = before - (self.grads["head.weight"] - before)
        return dx

    monkeypatch.setattr(NumpyRecurrentNet, "head_backward", wrong)
    code, rows, err = network_check(capsys, "task=classify", "data=synthetic_text", "model=gru")
    assert code == 1
    assert [row[0] for row in rows if row[-1] == "FAIL"] == ["head.weight"]
    assert err == [
        "rnnlab-gradcheck: error: classify on data=synthetic_text, model=gru: the backward of head.weight disagrees "
        "(tolerance 1e-10 against autograd, 1e-06 against finite differences)"
    ]


@pytest.mark.unit
def test_a_wrong_objective_gradient_fails_every_parameter(capsys, monkeypatch):
    """The MSE objective's NumPy gradient with its sign flipped: the loss agrees, every gradient disagrees."""
    from rnnlab.tasks.objectives import MSE

    right = MSE.numpy

    def wrong(self, pred, targets):
        loss, dpred = right(self, pred, targets)
        return loss, -dpred

    monkeypatch.setattr(MSE, "numpy", wrong)
    code, rows, err = network_check(capsys, "task=regress", "data=adding", "model=rnn")
    assert code == 1
    assert rows
    assert all(row[-1] == "FAIL" for row in rows)
    assert err[0].startswith("rnnlab-gradcheck: error: regress on data=adding, model=rnn: the backward of rnn.")


def test_the_network_scope_from_the_command_line(tmp_path):
    result = run("scope=network", "task=regress", "data=adding", "model=gru", "model.hidden_size=8", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("rnnlab-gradcheck regress on data=adding, model=gru: float64")
    assert "head.weight" in result.stdout
    assert result.stdout.rstrip().endswith(
        "regress on data=adding, model=gru: every gradient agrees (autograd <= 1e-10, finite differences <= 1e-06)"
    )


@pytest.mark.parametrize(
    ("args", "line"),
    [(("scope=network", "task=classify", "data=imdb", "model.hiden_size=8"),
      "rnnlab-gradcheck: error: model.hiden_size: Key 'hiden_size' not in 'ModelConfig' (did you mean hidden_size?)"),
     (("scope=network", "task=classify", "data=imdb", "model.num_layers=0"),
      "rnnlab-gradcheck: error: model.num_layers must be > 0, got 0"),
     (("scope=network", "task=classify", "data=imdb", "entries=none"),
      "rnnlab-gradcheck: error: entries=none: expected an integer >= 1"),
     (("scope=whole",), "rnnlab-gradcheck: error: scope=whole: choose one of cell, network")],
)  # fmt: skip
def test_a_bad_key_or_value_is_one_line(tmp_path, args, line):
    result = run(*args, cwd=tmp_path)
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [line]
