"""task=tag on data=ner_synth and data=copy: BIO spans and entity F1, the generators, both backends, parity."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import compose_raw
from test_numpy_train import run_recording

from rnnlab.data.tagging import LABELS, NerDataModule, copy_task, entity_scores, ner_sentence, spans
from rnnlab.models.init import init_parameters
from rnnlab.tasks.tag import TagTask
from rnnlab.train import train

NER = ("task=tag", "data=ner_synth", "data.num_train=200", "data.num_val=40", "data.num_test=40",
       "data.batch_size=16", "model.hidden_size=8", "model.embed_dim=6", "logger=csv")  # fmt: skip


def test_spans_read_bio_as_conlleval():
    assert spans(["B-PER", "I-PER", "O", "B-LOC"]) == {("PER", 0, 2), ("LOC", 3, 4)}
    assert spans(["I-ORG", "I-ORG", "O"]) == {("ORG", 0, 2)}  # I- without B- starts a span
    assert spans(["B-PER", "I-LOC", "I-LOC"]) == {("PER", 0, 1), ("LOC", 1, 3)}  # a type change starts another
    assert spans(["B-PER", "B-PER"]) == {("PER", 0, 1), ("PER", 1, 2)}
    assert spans(["O", "O"]) == set()


def test_entity_scores_count_exact_matches_only():
    true = [["B-PER", "I-PER", "O", "B-LOC"], ["B-ORG", "O"]]
    pred = [["B-PER", "O", "O", "B-LOC"], ["B-MISC", "O"]]  # PER cut short, ORG mistyped, LOC right
    precision, recall, f1 = entity_scores(true, pred)
    assert (precision, recall) == (pytest.approx(1 / 3), pytest.approx(1 / 3))
    assert f1 == pytest.approx(1 / 3)
    assert entity_scores([["O"]], [["O"]]) == (0.0, 0.0, 0.0)


def test_copy_task_layout():
    ids, labels = copy_task(5, copy_length=3, delay=4, num_symbols=6, rng=np.random.default_rng(0))
    assert ids.shape == labels.shape == (5, 10)
    np.testing.assert_array_equal(labels[:, 7:], ids[:, :3])  # recall the symbols, in order, after the delay
    assert (labels[:, :7] == -100).all()
    assert (ids[:, 6] == 7).all()  # <go> on the last delay step
    assert (ids[:, 3:6] == 0).all()
    assert (ids[:, 7:] == 0).all()
    assert ((ids[:, :3] >= 1) & (ids[:, :3] <= 6)).all()


def test_ner_sentences_are_valid_bio_and_seeded():
    rng = np.random.default_rng(4)
    sentences = [ner_sentence(rng) for _ in range(300)]
    kinds = set()
    for tokens, tags in sentences:
        assert len(tokens) == len(tags)
        assert set(tags) <= set(LABELS)
        for i, tag in enumerate(tags):  # every I-X continues an X entity
            if tag.startswith("I-"):
                assert tags[i - 1][2:] == tag[2:]
        kinds |= {kind for kind, _, _ in spans(tags)}
    assert kinds == {"PER", "ORG", "LOC", "MISC"}
    assert any(all(t == "O" for t in tags) for _, tags in sentences)
    again = np.random.default_rng(4)
    assert [ner_sentence(again) for _ in range(300)] == sentences


def test_tag_is_bidirectional_unless_the_user_says_otherwise():
    assert compose_raw(["task=tag", "data=ner_synth"]).model.bidirectional is True
    assert compose_raw(["task=tag", "data=copy", "model.bidirectional=false"]).model.bidirectional is False


@pytest.mark.parametrize("backend", ["torch", "numpy"])
def test_padding_does_not_change_per_token_predictions(backend):
    spec = {"cell": "gru", "vocab_size": 20, "embed_dim": 4, "hidden_size": 5, "num_layers": 2,
            "bidirectional": True, "num_outputs": 9, "padding_idx": 0}  # fmt: skip
    task = TagTask(spec=spec, optimizer={"name": "adam", "lr": 1e-3}, task={"name": "tag"},
                   vocab=[f"w{i}" for i in range(20)], seed=1, backend=backend, dtype="float64")  # fmt: skip
    if backend == "torch":
        task = task.double()
        task.net.load_arrays(init_parameters(task.spec, 1))
    with torch.no_grad():
        alone = task(torch.tensor([[3, 4, 5]]), torch.tensor([3]))
        together = task(torch.tensor([[3, 4, 5, 0, 0], [6, 7, 8, 9, 2]]), torch.tensor([3, 5]))
    torch.testing.assert_close(together[0, :3], alone[0], rtol=1e-12, atol=1e-12)


def test_entity_f1_of_a_run_equals_the_spans_of_its_predictions(compose, tmp_path):
    train(compose(*NER, "trainer.max_steps=4", "trainer.max_epochs=null", "trainer.val_check_interval=4",
                  run_dir=tmp_path))  # fmt: skip
    logged = pd.read_csv(tmp_path / "csv" / "metrics.csv")[["val/acc", "val/entity_f1"]].dropna()
    assert len(logged) == 1
    task = TagTask.load_from_checkpoint(tmp_path / "checkpoints" / "last.ckpt", map_location="cpu")
    dm = NerDataModule({"train": 200, "val": 40, "test": 40}, 2003, batch_size=16)
    dm.setup("fit")
    true, pred, correct, count = [], [], 0, 0
    with torch.no_grad():
        for x, lengths, y in dm.val_dataloader():
            p = task(x, lengths).argmax(-1)
            mask = y != -100
            correct += int((p == y)[mask].sum())
            count += int(mask.sum())
            for row_y, row_p, n in zip(y.tolist(), p.tolist(), lengths.tolist(), strict=True):
                true.append([LABELS[i] for i in row_y[:n]])
                pred.append([LABELS[i] for i in row_p[:n]])
    assert logged["val/acc"].iloc[0] == pytest.approx(correct / count, abs=1e-6)
    assert logged["val/entity_f1"].iloc[0] == pytest.approx(entity_scores(true, pred)[2], abs=1e-6)


@pytest.mark.parametrize("data", ["ner_synth", "copy"])
@pytest.mark.parametrize("backend", ["torch", "numpy"])
def test_fast_dev_run(compose, data, backend):
    sizes = ("data.num_train=64", "data.num_val=16", "data.num_test=16")
    extra = ("data.length=5", "data.copy_length=3") if data == "copy" else ()
    value = train(compose("task=tag", f"data={data}", *sizes, *extra, "model=lstm", "model.hidden_size=6",
                          f"model.backend={backend}", "trainer.fast_dev_run=true"))  # fmt: skip
    assert 0.0 <= value <= 1.0


def test_training_parity_on_ner_synth(compose, tmp_path, monkeypatch):
    common = (*NER, "model=lstm", "model.num_layers=2", "trainer.precision=64", "trainer.max_steps=20",
              "trainer.max_epochs=null", "trainer.gradient_clip_val=1.0", "seed=5")  # fmt: skip
    losses = {b: run_recording(compose, (*common, f"model.backend={b}"), tmp_path / b, monkeypatch)[0]
              for b in ("torch", "numpy")}  # fmt: skip
    assert len(losses["numpy"]) == 20
    np.testing.assert_allclose(losses["numpy"], losses["torch"], rtol=1e-8, atol=0)


def test_copy_experiment_is_a_cell_by_delay_sweep():
    cfg = compose_raw(["experiment=vanishing_gradient_copy"])
    assert cfg.hydra.mode.name == "MULTIRUN"
    assert dict(cfg.hydra.sweeper.params) == {"model": "rnn,lstm,gru", "data.length": "10,20,50"}
    assert (cfg.task.name, cfg.data.name, cfg.model.bidirectional) == ("tag", "copy", False)
