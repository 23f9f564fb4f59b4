"""task=tag on data=ner_synth and data=copy, task=regress on data=adding: the three seeded generators, span F1 on
hand-written cases, metrics against hand-computed values, masking on both backends, fast_dev_run of every pair on
both backends, float64 training parity, and one-line errors for bad values."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import compose_raw
from test_numpy_train import run_recording

from rnnlab.config import validate
from rnnlab.data.sequences import (
    FIRST,
    IGNORE,
    LABELS,
    LAST,
    LOC,
    MISC,
    ORG,
    AddingDataModule,
    CopyDataModule,
    NerSynthDataModule,
    adding_problem,
    build_copy,
    copy_task,
    ner_sentence,
)
from rnnlab.errors import ConfigError, DataError
from rnnlab.models.init import init_parameters
from rnnlab.tasks.tag import TagTask, entity_scores, spans
from rnnlab.train import train

pytestmark = pytest.mark.unit

NER = ("task=tag", "data=ner_synth", "data.num_train=120", "data.num_val=24", "data.num_test=24",
       "data.batch_size=12", "model.hidden_size=6", "model.embed_dim=5", "logger=csv")  # fmt: skip
COPY = ("task=tag", "data=copy", "data.length=6", "data.copy_length=3", "data.num_symbols=4", "data.num_train=64",
        "data.num_val=16", "data.num_test=16", "data.batch_size=16", "model.hidden_size=6", "model.embed_dim=5",
        "logger=csv")  # fmt: skip
ADDING = ("task=regress", "data=adding", "data.length=10", "data.num_train=96", "data.num_val=32",
          "data.num_test=32", "data.batch_size=16", "model.hidden_size=6", "logger=csv")  # fmt: skip
PAIRS = {"ner_synth": NER, "copy": COPY, "adding": ADDING}


def replacing(base: tuple[str, ...], *overrides: str) -> list[str]:
    """``base`` with ``overrides`` instead of its own values for the same keys (Hydra refuses a key twice)."""
    keys = {o.split("=")[0] for o in overrides}
    return [o for o in base if o.split("=")[0] not in keys] + list(overrides)


# --------------------------------------------------------------------------------------------- adding problem
def test_adding_sequences_and_targets():
    x, y = adding_problem(400, 9, np.random.default_rng(0))
    assert x.shape == (400, 9, 2)
    assert y.shape == (400, 1)
    assert x.dtype == y.dtype == np.float32
    markers = x[..., 1]
    assert set(np.unique(markers)) == {0.0, 1.0}
    positions = np.array([np.flatnonzero(row) for row in markers])  # exactly two per row (else ragged: error)
    assert positions.shape == (400, 2)
    assert (positions[:, 0] < 4).all()
    assert (positions[:, 1] >= 4).all()
    for row in range(5):  # the target is the sum of the two marked values
        i, j = positions[row]
        assert y[row, 0] == pytest.approx(float(x[row, i, 0]) + float(x[row, j, 0]), abs=1e-6)
    np.testing.assert_allclose(y[:, 0], (x[..., 0] * markers).sum(axis=1), rtol=1e-6)
    assert ((x[..., 0] >= 0) & (x[..., 0] < 1)).all()


def test_adding_constant_mean_baseline_is_one_sixth():
    _, y = adding_problem(200_000, 10, np.random.default_rng(1))
    assert y.mean() == pytest.approx(1.0, abs=0.005)
    assert np.mean((y - 1.0) ** 2) == pytest.approx(1 / 6, abs=0.003)
    dm = AddingDataModule(50, 4000, 4000, 10, generator_seed=2015, batch_size=64)
    dm.setup("fit")
    assert dm.baseline_mse["val"] == pytest.approx(1 / 6, abs=0.01)
    mean = dm.splits["train"].y.double().mean()
    assert dm.baseline_mse["val"] == pytest.approx(float(((dm.splits["val"].y.double() - mean) ** 2).mean()))


def test_adding_data_is_seeded_by_the_generator_seed_only():
    def train_x(generator_seed: int, run_seed: int) -> np.ndarray:
        dm = AddingDataModule(12, 32, 8, 8, generator_seed, batch_size=8, seed=run_seed)
        dm.setup("fit")
        return dm.splits["train"].x.numpy()

    assert np.array_equal(train_x(5, 0), train_x(5, 99))
    assert not np.array_equal(train_x(5, 0), train_x(6, 0))


# -------------------------------------------------------------------------------------------------- copy task
def test_copy_layout():
    ids, labels = copy_task(4, copy_length=3, length=5, num_symbols=6, rng=np.random.default_rng(0))
    assert ids.shape == labels.shape == (4, 3 + 5 + 1 + 3)
    symbols = ids[:, :3]
    assert ((symbols >= 1) & (symbols <= 6)).all()
    assert (ids[:, 3:8] == 0).all()  # the delay: `length` blanks
    assert (ids[:, 8] == 7).all()  # the <go> delimiter
    assert (ids[:, 9:] == 0).all()  # blanks while recalling
    assert (labels[:, :9] == IGNORE).all()
    np.testing.assert_array_equal(labels[:, 9:], symbols)  # recall in order


def test_copy_data_module_is_seeded_and_fixed_length():
    def module(generator_seed: int, run_seed: int) -> CopyDataModule:
        dm = CopyDataModule(2, 4, 3, {"train": 40, "val": 8, "test": 8}, generator_seed, batch_size=8, seed=run_seed)
        dm.setup("fit")
        return dm

    a, b, c = module(1, 0), module(1, 7), module(2, 0)
    assert a.vocab.itos == ["<blank>", "s1", "s2", "s3", "<go>"]
    assert a.num_outputs == 5
    assert torch.equal(a.splits["train"].ids, b.splits["train"].ids)
    assert not torch.equal(a.splits["train"].ids, c.splits["train"].ids)
    assert not torch.equal(a.splits["val"].ids, a.splits["train"].ids[:8])
    x, lengths, y = next(iter(a.train_dataloader()))
    assert x.shape == y.shape == (8, 2 * 2 + 4 + 1)
    assert (lengths == 9).all()


# --------------------------------------------------------------------------------------------- named entities
def test_ner_sentences_are_valid_bio_varied_and_seeded():
    assert len(FIRST) + len(LAST) + len(ORG) + len(LOC) + len(MISC) >= 300
    rng = np.random.default_rng(4)
    sentences = [ner_sentence(rng) for _ in range(1500)]
    kinds, roles, multiword, plain = set(), {}, 0, 0
    for tokens, tags in sentences:
        assert len(tokens) == len(tags) >= 4
        assert set(tags) <= set(LABELS)
        for i, tag in enumerate(tags):  # the generator writes strict BIO: every I-X continues an X entity
            if tag.startswith("I-"):
                assert i > 0
                assert tags[i - 1][2:] == tag[2:]
        found = spans(tags)
        kinds |= {kind for kind, _, _ in found}
        multiword += sum(end - start > 1 for _, start, end in found)
        plain += not found
        for token, tag in zip(tokens, tags, strict=True):
            roles.setdefault(token, set()).add(tag)
    assert kinds == {"PER", "ORG", "LOC", "MISC"}
    assert multiword > 100
    assert 0.12 < plain / len(sentences) < 0.28  # a fifth of the sentences have no entity
    assert {"B-PER", "B-LOC"} <= roles["Jordan"]  # ambiguous words
    assert {"B-PER", "O"} <= roles["May"]
    assert {"B-ORG", "B-LOC"} <= roles["Amazon"]
    again = np.random.default_rng(4)
    assert [ner_sentence(again) for _ in range(1500)] == sentences


def test_ner_data_module_vocabulary_padding_and_unseen_names():
    dm = NerSynthDataModule({"train": 400, "val": 200, "test": 50}, generator_seed=3, batch_size=16)
    dm.setup("fit")
    assert dm.vocab.itos[:2] == ["<pad>", "<unk>"]
    assert dm.pad_id == 0
    assert dm.num_outputs == 9
    train_ids = dm.splits["train"].ids
    assert not (train_ids == 1).any()  # the vocabulary is the training split's words
    val = dm.splits["val"]
    unk_labels = val.labels[val.ids == 1]
    assert len(unk_labels) > 0
    assert (unk_labels != 0).float().mean() > 0.9
    x, lengths, y = next(iter(dm.val_dataloader()))
    assert x.shape[1] == int(lengths.max())  # padded to the batch's longest sentence
    for row, n in enumerate(lengths.tolist()):
        assert (x[row, n:] == 0).all()
        assert (y[row, n:] == IGNORE).all()
        assert (y[row, :n] != IGNORE).all()
    other = NerSynthDataModule({"train": 400, "val": 200, "test": 50}, generator_seed=3, batch_size=16, seed=9)
    other.setup("fit")
    assert other.vocab.itos == dm.vocab.itos
    assert torch.equal(other.splits["val"].ids, val.ids)


# ------------------------------------------------------------------------------------------------ entity F1
def test_spans_read_bio_as_conlleval():
    assert spans(["B-PER", "I-PER", "O", "B-LOC"]) == {("PER", 0, 2), ("LOC", 3, 4)}
    assert spans(["O", "I-ORG", "I-ORG"]) == {("ORG", 1, 3)}  # I- after O starts a span
    assert spans(["I-MISC"]) == {("MISC", 0, 1)}
    assert spans(["B-PER", "I-LOC", "I-LOC"]) == {("PER", 0, 1), ("LOC", 1, 3)}  # a type change starts one
    assert spans(["B-PER", "B-PER", "I-PER"]) == {("PER", 0, 1), ("PER", 1, 3)}
    assert spans(["O", "O"]) == set()


@pytest.mark.parametrize(
    ("pred", "expected"),
    [
        (["B-PER", "I-PER", "O", "B-LOC", "I-LOC", "O"], (1.0, 1.0, 1.0)),  # exact
        (["B-ORG", "I-ORG", "O", "B-LOC", "I-LOC", "O"], (1 / 2, 1 / 2, 1 / 2)),  # wrong type for PER
        (["B-PER", "O", "O", "B-LOC", "I-LOC", "I-LOC"], (0.0, 0.0, 0.0)),  # PER cut short, LOC too long: none
        (["I-PER", "I-PER", "O", "O", "I-LOC", "O"], (1 / 2, 1 / 2, 1 / 2)),  # I- without B-: PER right, LOC partial
        (["B-PER", "I-PER", "O", "B-LOC", "I-LOC", "B-MISC"], (2 / 3, 1.0, 0.8)),  # one spurious span
        (["O"] * 6, (0.0, 0.0, 0.0)),  # nothing predicted: precision undefined -> 0
    ],
)
def test_entity_scores_on_hand_written_cases(pred, expected):
    true = ["B-PER", "I-PER", "O", "B-LOC", "I-LOC", "O"]
    assert entity_scores([true], [pred]) == pytest.approx(expected)


def test_entity_scores_pool_spans_over_sentences():
    true = [["B-PER", "O"], ["B-ORG", "I-ORG"], ["O", "O"]]
    pred = [["B-PER", "O"], ["B-ORG", "O"], ["B-MISC", "O"]]  # 1 right of 3 predicted, 1 of 2 true found
    precision, recall, f1 = entity_scores(true, pred)
    assert (precision, recall, f1) == pytest.approx((1 / 3, 1 / 2, 2 * (1 / 6) / (5 / 6)))


def _seqeval_scores(true: list[list[str]], pred: list[list[str]], **mode: object) -> tuple[float, float, float]:
    from seqeval.metrics import f1_score, precision_score, recall_score

    kw = {"average": "micro", "zero_division": 0, **mode}
    return precision_score(true, pred, **kw), recall_score(true, pred, **kw), f1_score(true, pred, **kw)


SEQEVAL_CASES = [  # (true, pred), each a corpus of sentences
    ([["B-PER", "I-PER", "O", "B-LOC", "I-LOC", "O"]], [["I-PER", "I-PER", "O", "O", "I-LOC", "O"]]),  # I- opens
    ([["O", "I-ORG", "I-ORG", "B-ORG"]], [["B-ORG", "I-ORG", "I-ORG", "I-ORG"]]),  # B- after a span splits it
    ([["B-PER", "I-LOC", "I-LOC"]], [["B-PER", "B-LOC", "I-LOC"]]),  # a type change opens a span
    ([["I-MISC"], ["B-PER", "I-PER"], []], [["B-MISC"], ["B-PER", "O"], []]),  # sentence ends close spans
    ([["B-PER", "I-PER"], ["I-PER", "O"]], [["B-PER", "I-PER"], ["B-PER", "O"]]),  # no span across sentences
    ([["O", "O"]], [["O", "O"]]),  # nothing anywhere: all 0
    ([["O", "B-LOC"]], [["O", "O"]]),  # nothing predicted
]


@pytest.mark.parametrize(("true", "pred"), SEQEVAL_CASES)
def test_entity_scores_equal_seqeval_default_mode_by_hand(true, pred):
    """rnnlab's spans are conlleval's, which seqeval's default mode reproduces: an I-X that does not continue an X
    span starts one, B-X after an X span starts another, a span never crosses a sentence."""
    from seqeval.metrics.sequence_labeling import get_entities

    assert entity_scores(true, pred) == _seqeval_scores(true, pred)
    for tags in (*true, *pred):
        assert spans(tags) == {(kind, start, end + 1) for kind, start, end in get_entities(tags)}  # seqeval: end incl.


def test_entity_scores_equal_seqeval_on_random_tag_sequences():
    """3,000 random corpora over the nine ner_synth labels (any order, so plenty of I- without B-, type changes and
    empty sentences): precision, recall and F1 equal seqeval's default (conlleval) mode exactly."""
    rng = np.random.default_rng(14)
    for _ in range(3000):
        true = [list(rng.choice(LABELS, size=rng.integers(0, 9))) for _ in range(rng.integers(1, 5))]
        pred = [[str(rng.choice(LABELS)) if rng.random() < 0.4 else tag for tag in sent] for sent in true]
        true = [[str(tag) for tag in sent] for sent in true]
        assert entity_scores(true, pred) == _seqeval_scores(true, pred), (true, pred)


def test_entity_scores_are_not_seqeval_strict_iob2():
    """The strict IOB2 scheme drops an I-X that follows no B-X: rnnlab, like conlleval, does not, so on such tags
    it counts a span that strict mode does not (here a correct one: recall 1 against strict mode's 1/2)."""
    from seqeval.scheme import IOB2

    true = [["B-PER", "I-PER", "O", "B-LOC"]]
    pred = [["I-PER", "I-PER", "O", "B-LOC"]]
    assert entity_scores(true, pred) == (1.0, 1.0, 1.0) == _seqeval_scores(true, pred)
    assert _seqeval_scores(true, pred, mode="strict", scheme=IOB2) == (1.0, 0.5, pytest.approx(2 / 3))


# ---------------------------------------------------------------------------------------- the task's metrics
def _tag_task(backend: str, bidirectional: bool = True, cell: str = "gru") -> TagTask:
    spec = {"cell": cell, "vocab_size": 12, "embed_dim": 4, "hidden_size": 5, "num_layers": 2,
            "bidirectional": bidirectional, "num_outputs": 9, "padding_idx": 0}  # fmt: skip
    task = TagTask(spec=spec, optimizer={"name": "adam", "lr": 1e-3}, task={"name": "tag"},
                   vocab=[f"w{i}" for i in range(12)], seed=1, backend=backend, dtype="float64")  # fmt: skip
    if backend == "torch":
        task = task.double()
        task.net.load_arrays(init_parameters(task.spec, 1))
    return task


def test_evaluation_metrics_equal_hand_computed_values(monkeypatch):
    """Fixed logits: loss and accuracy count the labelled steps only; entity scores use the BIO names."""
    task = _tag_task("numpy")
    o, bper, iper, bloc = (LABELS.index(n) for n in ("O", "B-PER", "I-PER", "B-LOC"))
    y = torch.tensor([[bper, iper, o, IGNORE], [bloc, o, IGNORE, IGNORE]])
    pred = torch.tensor([[bper, o, o, bloc], [bloc, bper, o, o]])  # PER cut short, LOC right; padding wrong
    logits = torch.full((2, 4, 9), 0.0, dtype=torch.float64).scatter_(2, pred[..., None], 2.0)
    monkeypatch.setattr(task, "forward", lambda x, lengths: logits)
    monkeypatch.setattr(task, "_bio_label_names", lambda: LABELS)
    logged = {}
    monkeypatch.setattr(task, "log", lambda name, value, **kw: logged.__setitem__(name, float(value)))
    task._evaluate((torch.zeros(2, 4, dtype=torch.long), torch.tensor([3, 2]), y), "val")
    task._log_split("val")
    right, wrong = -math.log(math.exp(2) / (math.exp(2) + 8)), -math.log(1 / (math.exp(2) + 8))
    assert logged["val/acc"] == pytest.approx(3 / 5)  # 5 labelled tokens, 3 right
    assert logged["val/loss"] == pytest.approx((3 * right + 2 * wrong) / 5)
    # true spans: PER(0,2), LOC(0,1); predicted: PER(0,1), LOC(0,1), PER(1,2) -> 1 of 3 right, 1 of 2 found
    assert logged["val/entity_precision"] == pytest.approx(1 / 3)
    assert logged["val/entity_recall"] == pytest.approx(1 / 2)
    assert logged["val/entity_f1"] == pytest.approx(0.4)


@pytest.mark.parametrize("cell", ["gru", "lstm"])
def test_padding_does_not_change_per_token_predictions_on_either_backend(cell):
    """Both backends: a sequence's logits are the same alone and padded in a batch, and equal across backends."""
    alone_x, alone_len = torch.tensor([[3, 4, 5]]), torch.tensor([3])
    batch_x = torch.tensor([[3, 4, 5, 0, 0], [6, 7, 8, 9, 2], [11, 0, 0, 0, 0]])
    batch_len = torch.tensor([3, 5, 1])
    out = {}
    for backend in ("torch", "numpy"):
        task = _tag_task(backend, cell=cell)
        with torch.no_grad():
            alone, together = task(alone_x, alone_len), task(batch_x, batch_len)
        torch.testing.assert_close(together[0, :3], alone[0], rtol=1e-12, atol=1e-12)
        out[backend] = together
    for row, n in enumerate(batch_len.tolist()):
        torch.testing.assert_close(out["numpy"][row, :n], out["torch"][row, :n], rtol=1e-10, atol=1e-12)


# ---------------------------------------------------------------------------------------------- configuration
def test_tag_defaults_bidirectional_and_monitor_per_data():
    ner, copy = compose_raw(["task=tag", "data=ner_synth"]), compose_raw(["task=tag", "data=copy", "model=gru"])
    assert ner.model.bidirectional is True
    assert copy.model.bidirectional is True
    assert (ner.task.monitor, ner.task.mode, ner.callbacks.model_checkpoint.monitor) == ("val/entity_f1", "max",
                                                                                         "val/entity_f1")  # fmt: skip
    assert (copy.task.monitor, copy.optimized_metric) == ("val/acc", "val/acc")
    user = compose_raw(["task=tag", "data=copy", "model=rnn", "model.bidirectional=false", "task.monitor=val/loss"])
    assert (user.model.bidirectional, user.task.monitor) == (False, "val/loss")
    regress = compose_raw(["task=regress", "data=adding"])
    assert (regress.task.monitor, regress.task.mode, regress.model.bidirectional) == ("val/mse", "min", False)


@pytest.mark.parametrize(
    ("data", "override", "key"),
    [
        ("copy", "data.length=0", "data.length"),
        ("copy", "data.copy_length=-1", "data.copy_length"),
        ("copy", "data.copy_length=7", "data.copy_length"),  # K > length (6)
        ("copy", "data.num_symbols=1", "data.num_symbols"),
        ("copy", "data.num_test=0", "data.num_test"),
        ("ner_synth", "data.num_val=0", "data.num_val"),
        ("adding", "data.length=1", "data.length"),
        ("adding", "data.num_train=0", "data.num_train"),
        ("adding", "task=tag", "task=tag"),  # a task that does not fit the data
    ],
)
def test_bad_values_fail_with_one_line_naming_the_key(compose, data, override, key):
    with pytest.raises(ConfigError) as err:
        validate(compose(*replacing(PAIRS[data], override)))
    assert key in str(err.value)
    assert "\n" not in str(err.value)


def test_the_data_builders_check_their_values_too():
    cfg = compose_raw(replacing(COPY, "data.copy_length=7")).data
    with pytest.raises(DataError, match=r"data\.copy_length \(7\) must be <= data\.length \(6\)"):
        build_copy(cfg, 0, None, batch_size=4)


# ------------------------------------------------------------------------------------------------ real runs
@pytest.mark.compose
@pytest.mark.parametrize("data", ["ner_synth", "copy", "adding"])
@pytest.mark.parametrize("backend", ["torch", "numpy"])
def test_fast_dev_run(compose, data, backend):
    value = train(compose(*PAIRS[data], "model=lstm", f"model.backend={backend}", "trainer.fast_dev_run=true")).value
    if data == "adding":
        assert 0.0 < value < 5.0  # val/mse of an untrained net on targets in [0, 2]
    else:
        assert 0.0 <= value <= 1.0  # val/entity_f1 or val/acc


@pytest.mark.compose
def test_logged_ner_metrics_equal_the_spans_of_the_predictions(compose, tmp_path, monkeypatch):
    overrides = (*NER, "model.backend=numpy", "trainer.max_steps=3", "trainer.max_epochs=null",
                 "trainer.val_check_interval=3", "run_test=false")  # fmt: skip
    _, task = run_recording(compose, overrides, tmp_path, monkeypatch)
    logged = pd.read_csv(tmp_path / "csv" / "metrics.csv")[["val/acc", "val/entity_f1", "val/loss"]].dropna()
    assert len(logged) == 1
    dm = NerSynthDataModule({"train": 120, "val": 24, "test": 24}, 2003, batch_size=12)
    dm.setup("fit")
    true, pred, correct, count, nll = [], [], 0, 0, 0.0
    with torch.no_grad():
        for x, lengths, y in dm.val_dataloader():
            logits = task(x, lengths)
            p = logits.argmax(-1)
            mask = y != IGNORE
            correct, count = correct + int((p == y)[mask].sum()), count + int(mask.sum())
            log_p = torch.log_softmax(logits.double(), -1).gather(-1, y.clamp(min=0)[..., None])[..., 0]
            nll -= float(log_p[mask].sum())
            for row_y, row_p, n in zip(y.tolist(), p.tolist(), lengths.tolist(), strict=True):
                true.append([LABELS[i] for i in row_y[:n]])
                pred.append([LABELS[i] for i in row_p[:n]])
    assert logged["val/acc"].iloc[0] == pytest.approx(correct / count, abs=1e-6)
    assert logged["val/loss"].iloc[0] == pytest.approx(nll / count, rel=1e-5)
    assert logged["val/entity_f1"].iloc[0] == pytest.approx(entity_scores(true, pred)[2], abs=1e-6)


@pytest.mark.compose
@pytest.mark.parametrize(
    ("data", "model"),
    [("ner_synth", ("model=gru", "model.num_layers=2")),  # bidirectional (the task's default), variable lengths
     ("adding", ("model=lstm", "model.num_layers=2", "model.bidirectional=true"))],
)  # fmt: skip
def test_training_parity_float64(compose, tmp_path, monkeypatch, data, model):
    common = (*PAIRS[data], *model, "optimizer=adam", "optimizer.lr=0.01", "trainer.precision=64",
              "trainer.max_steps=20", "trainer.max_epochs=null", "trainer.gradient_clip_val=0.5", "seed=3",
              "run_test=false")  # fmt: skip
    losses = {b: run_recording(compose, (*common, f"model.backend={b}"), tmp_path / b, monkeypatch)[0]
              for b in ("torch", "numpy")}  # fmt: skip
    assert len(losses["numpy"]) == 20
    np.testing.assert_allclose(losses["numpy"], losses["torch"], rtol=1e-8, atol=0)
    assert losses["torch"][-1] < losses["torch"][0]  # it trains
