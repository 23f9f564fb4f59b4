"""The registries from the real command line: a sweep over data options that share a key, and a plug-in task and
dataset loaded with plugins=[...] (selected, listed by --help, trained)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import yaml

from rnnlab.registry import TASKS

pytestmark = pytest.mark.cli

RNNLAB_TRAIN = Path(sys.executable).parent / "rnnlab-train"
TINY = ["model.hidden_size=8", "model.embed_dim=8", "trainer.fast_dev_run=true", "trainer.enable_progress_bar=false",
        "logger=csv"]  # fmt: skip


def run_cli(*args: str, cwd: Path, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "HYDRA_FULL_ERROR"}
    env["RNNLAB_OUTPUT_DIR"] = str(cwd / "out")
    return subprocess.run([str(RNNLAB_TRAIN), *args], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=timeout)  # fmt: skip


def error_lines(result: subprocess.CompletedProcess[str]) -> list[str]:
    return [line for line in result.stderr.splitlines() if line.strip()]


def test_a_sweep_over_data_options_sets_the_key_they_share(tmp_path):
    """data=imdb,rt_sentences data.limit_samples=2000: the base config (data=shakespeare) has no limit_samples, and
    both jobs compose with it."""
    sweep = tmp_path / "sweep"
    result = run_cli("-m", "task=classify", "data=imdb,rt_sentences", "data.limit_samples=2000", *TINY,
                     f"hydra.sweep.dir={sweep}", cwd=tmp_path)  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    jobs = sorted((p for p in sweep.iterdir() if (p / "config_resolved.yaml").is_file()), key=lambda p: p.name)
    assert [p.name.split("_", 1)[0] for p in jobs] == ["0", "1"]
    for job, name in zip(jobs, ["imdb", "rt_sentences"], strict=True):
        data = yaml.safe_load((job / "config_resolved.yaml").read_text())["data"]
        assert (data["name"], data["limit_samples"]) == (name, 2000)
        assert "data.limit_samples=2000" in job.name
        assert "data.limit_samples=2000" in yaml.safe_load((job / ".hydra" / "overrides.yaml").read_text())
        assert (job / "summary.json").is_file()


def test_a_misspelt_key_in_such_a_sweep_is_one_line(tmp_path):
    result = run_cli("-m", "task=classify", "data=imdb,rt_sentences", "data.limit_sample=2000", *TINY,
                     f"hydra.sweep.dir={tmp_path / 'sweep'}", cwd=tmp_path)  # fmt: skip
    assert result.returncode == 1
    (line,) = error_lines(result)
    assert line.startswith("rnnlab: error: data.limit_sample: ")
    assert line.endswith("(did you mean limit_samples?)")


PLUGIN = """
from dataclasses import dataclass

from rnnlab.data.specs.synthetic_text import SyntheticTextConfig
from rnnlab.registry import DATASETS, TASKS
from rnnlab.tasks.specs.classify import ClassifyTaskConfig


@dataclass
class TinyTextConfig(SyntheticTextConfig):
    num_samples: int = 200
    flavour: str = "plain"


@dataclass
class MyClassifyConfig(ClassifyTaskConfig):
    name: str = "my_classify"


DATASETS.add("tiny_text", target="rnnlab.data.datamodules:build_synthetic_text", schema=TinyTextConfig,
             kind="classification", doc="a small synthetic_text")
TASKS.add("my_classify", target="rnnlab.tasks.classify:ClassifyTask", schema=MyClassifyConfig,
          accepts="classification", doc="classify, registered by a plug-in")
"""


def test_a_plugin_task_and_dataset_from_the_command_line(tmp_path):
    (tmp_path / "my_plugins.py").write_text(textwrap.dedent(PLUGIN))
    chosen = ["plugins=[my_plugins]", "task=my_classify", "data=tiny_text"]
    shown = run_cli("--cfg", "job", *chosen, "data.flavour=spicy", cwd=tmp_path)
    assert shown.returncode == 0, shown.stderr
    composed = yaml.safe_load(shown.stdout)
    assert (composed["task"]["name"], composed["data"]["name"], composed["data"]["flavour"]) == (
        "my_classify", "tiny_text", "spicy"
    )  # fmt: skip
    helped = run_cli("plugins=[my_plugins]", "--help", cwd=tmp_path)
    assert helped.returncode == 0, helped.stderr
    assert f"{', '.join(TASKS.names())}, my_classify\n" in helped.stdout  # the built-ins, then the plug-in
    assert re.search(r"synthetic_text, tiny_text \([^)]*\bclassify\b[^)]*\bmy_classify\b", helped.stdout)  # one kind
    typo = run_cli(*chosen, "data.flavor=x", cwd=tmp_path)
    assert typo.returncode == 1
    assert error_lines(typo) == [
        "rnnlab: error: data.flavor: Key 'flavor' not in 'TinyTextConfig' (did you mean flavour?)"
    ]
    missing = run_cli("plugins=[no_such_plugin]", cwd=tmp_path)
    assert missing.returncode == 1
    assert error_lines(missing) == [
        "rnnlab: error: plugins: cannot import 'no_such_plugin' (No module named 'no_such_plugin')"
    ]
    trained = run_cli(*chosen, *TINY, cwd=tmp_path)
    assert trained.returncode == 0, trained.stderr[-3000:]
    assert "== rnnlab: my_classify | lstm (torch) | data=tiny_text | seed=42 ==" in trained.stdout


CELL_PLUGIN = """
from typing import Any

from rnnlab.cells.protocol import Cell
from rnnlab.cells.rnn import RNNCell
from rnnlab.registry import CELLS


@CELLS.register("my_rnn", doc="an Elman RNN run by the reference torch module")
class MyRNN(RNNCell):
    name = "my_rnn"

    def torch_module(self, input_size: int, num_layers: int, bidirectional: bool, dropout: float) -> Any:
        return Cell.torch_module(self, input_size, num_layers, bidirectional, dropout)  # ReferenceRecurrent
"""


def test_a_plugin_cell_from_the_command_line(tmp_path):
    """plugins=[my_cells] model.cell=my_rnn (and model=my_rnn, with no YAML file): listed by --help, trained on both
    backends, the torch backend running the cell's torch_step in the reference module."""
    (tmp_path / "my_cells.py").write_text(textwrap.dedent(CELL_PLUGIN))
    helped = run_cli("plugins=[my_cells]", "--help", cwd=tmp_path)
    assert helped.returncode == 0, helped.stderr
    assert re.search(r"^model: .*, rnn, my_rnn$", helped.stdout, re.MULTILINE)  # the plug-in after the built-ins
    shown = run_cli("--cfg", "job", "plugins=[my_cells]", "model=my_rnn", cwd=tmp_path)
    assert shown.returncode == 0, shown.stderr
    assert yaml.safe_load(shown.stdout)["model"]["cell"] == "my_rnn"
    for backend in ("numpy", "torch"):
        trained = run_cli("plugins=[my_cells]", "model.cell=my_rnn", f"model.backend={backend}", "task=classify",
                          "data=synthetic_text", "data.num_samples=200", *TINY, cwd=tmp_path)  # fmt: skip
        assert trained.returncode == 0, trained.stderr[-3000:]
        assert f"== rnnlab: classify | my_rnn ({backend}) | data=synthetic_text | seed=42 ==" in trained.stdout
    unknown = run_cli("model.cell=my_rnn", cwd=tmp_path)  # without the plug-in
    assert unknown.returncode == 1
    assert error_lines(unknown)[-1].startswith("rnnlab: error: model.cell=my_rnn: unknown cell 'my_rnn'")
