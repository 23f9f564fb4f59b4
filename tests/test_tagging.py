"""Config-level checks of task=tag and its experiment preset (the task itself: tests/test_tag_regress.py)."""

from __future__ import annotations

import pytest
from conftest import compose_raw

pytestmark = pytest.mark.unit


def test_tag_is_bidirectional_unless_the_user_says_otherwise():
    assert compose_raw(["task=tag", "data=ner_synth"]).model.bidirectional is True
    assert compose_raw(["task=tag", "data=copy", "model.bidirectional=false"]).model.bidirectional is False


def test_copy_experiment_is_a_cell_by_delay_sweep():
    cfg = compose_raw(["experiment=vanishing_gradient_copy"])
    assert cfg.hydra.mode.name == "MULTIRUN"
    assert dict(cfg.hydra.sweeper.params) == {"model": "rnn,lstm,gru", "data.length": "10,20,50"}
    assert (cfg.task.name, cfg.data.name, cfg.model.bidirectional) == ("tag", "copy", False)
