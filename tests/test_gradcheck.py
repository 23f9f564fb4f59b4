"""rnnlab-gradcheck from the real command line: it passes on a built-in cell, and fails, naming the parameter, on a
plug-in cell whose backward has a deliberately wrong sign."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

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
