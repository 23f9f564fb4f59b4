"""Character corpora streamed into an on-disk token cache (rnnlab.data.token_cache) and read one batch at a time."""

from __future__ import annotations

import os
import pickle
import subprocess
import sys
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
import torch

from rnnlab.data import corpus, token_cache
from rnnlab.data.datamodules import CharCorpusDataModule, CharStreams, CharWindows
from rnnlab.data.token_cache import TokenSlice
from rnnlab.data.vocab import CharVocab
from rnnlab.errors import DataError

pytestmark = pytest.mark.unit

# 1-, 2-, 3- and 4-byte UTF-8 characters, so that small chunks cut characters at every possible byte
TEXT = "To be, or not to be\u2014that is the question:\n\u00c6sop's na\u00efve \U0001f600 fable, \u4e00\u4e8c.\n"


def module(path: Path, cache: Path, chunk_bytes: int = token_cache.CHUNK_BYTES, prepare: bool = True,
           **kw) -> CharCorpusDataModule:  # fmt: skip
    """A set-up text_file module; ``prepare=False`` skips prepare_data, so that setup itself builds the cache
    (``token_file.built`` then tells whether it did)."""
    args = dict(name="text_file", path=str(path), seq_len=4, val_fraction=0.1, test_fraction=0.1, batch_size=2)
    args.update(kw)
    dm = CharCorpusDataModule(**args, cache_dir=str(cache), chunk_bytes=chunk_bytes)
    if prepare:
        dm.prepare_data()
    dm.setup("fit")
    return dm


def all_tokens(dm: CharCorpusDataModule) -> np.ndarray:
    return np.concatenate([np.asarray(dm.splits[k].tokens) for k in ("train", "val", "test")])


def cache_files(cache: Path) -> list[str]:
    return sorted(p.name for p in cache.glob("tokens-*"))


# ------------------------------------------------------------------------------------------- the same tokens
@pytest.mark.parametrize("chunk_bytes", [1, 2, 3, 5, 7, 64, token_cache.CHUNK_BYTES])
def test_streamed_tokens_equal_encode_corpus(tmp_path, chunk_bytes):
    text = TEXT * 7
    path = tmp_path / "corpus.txt"
    path.write_bytes(text.encode("utf-8"))
    dm = module(path, tmp_path / "cache", chunk_bytes)
    vocab = CharVocab.from_text(text)
    assert dm.vocab.itos == vocab.itos  # the same symbols in the same order (by code point)
    np.testing.assert_array_equal(all_tokens(dm), vocab.encode_corpus(text))
    n = len(text)
    sizes = {k: len(dm.splits[k].tokens) for k in ("train", "val", "test")}
    assert sizes == {"train": n - 2 * int(n * 0.1), "val": int(n * 0.1), "test": int(n * 0.1)}
    tokens = np.load(dm.token_file.path, mmap_mode="r")  # the cache is an ordinary .npy file
    assert tokens.dtype == np.uint8
    np.testing.assert_array_equal(tokens, vocab.encode_corpus(text))


def test_a_character_cut_by_a_chunk_comes_out_whole(tmp_path):
    path = tmp_path / "cut.txt"
    path.write_bytes(b"abc\xf0\x9f\x98\x80d\xc3")  # the emoji's 4 bytes straddle the 4-byte chunks; then a cut \xc3
    path.write_bytes(path.read_bytes() + b"\xa9")
    assert list(corpus.iter_text_chunks(path, chunk_bytes=4)) == ["abc", "\U0001f600d", "\u00e9"]
    assert list(corpus.iter_text_chunks(path, chunk_bytes=1)) == ["a", "b", "c", "\U0001f600", "d", "\u00e9"]


@pytest.mark.parametrize(("symbols", "dtype"), [(300, np.uint16), (65_537, np.int32)])
def test_large_vocabularies_use_wider_tokens(tmp_path, symbols, dtype):
    points = [c for c in range(0x21, 0x21 + symbols + 2048) if not 0xD800 <= c <= 0xDFFF][:symbols]
    text = "".join(map(chr, points)) * 2
    path = tmp_path / "wide.txt"
    path.write_text(text, encoding="utf-8")
    dm = module(path, tmp_path / "cache", chunk_bytes=1000)
    assert dm.token_file.dtype == dtype
    assert dm.vocab.itos == CharVocab.from_text(text).itos
    np.testing.assert_array_equal(all_tokens(dm), CharVocab.from_text(text).encode_corpus(text))


def test_shakespeare_tokens_and_splits_are_unchanged(rnnlab_env, shakespeare):
    """The default job's data: the same vocabulary and tokens at the same split positions as encode_corpus of the
    whole text (what the data module did before the token cache), so its results keep their numbers."""
    dm = CharCorpusDataModule("shakespeare", None, seq_len=100, val_fraction=0.05, test_fraction=0.05,
                              batch_size=64, cache_dir=str(rnnlab_env["cache"]))  # fmt: skip
    dm.prepare_data()
    dm.setup("fit")
    vocab = CharVocab.from_text(shakespeare)
    assert dm.vocab.itos == vocab.itos
    assert dm.token_file.dtype == np.uint8
    expected = vocab.encode_corpus(shakespeare)
    n = len(expected)
    n_val = n_test = int(n * 0.05)
    bounds = {"train": (0, n - n_val - n_test), "val": (n - n_val - n_test, n - n_test), "test": (n - n_test, n)}
    for split, (start, stop) in bounds.items():
        np.testing.assert_array_equal(np.asarray(dm.splits[split].tokens), expected[start:stop], err_msg=split)
    old = CharWindows(expected[bounds["val"][0] : bounds["val"][1]], 100)  # the windows from an in-memory array
    x, y = dm.splits["val"].collate([0, 5, len(old) - 1])
    x_old, y_old = old.collate([0, 5, len(old) - 1])
    assert torch.equal(x, x_old)
    assert torch.equal(y, y_old)


def test_streams_read_from_the_file_equal_streams_from_an_array(tmp_path):
    text = "".join(chr(ord("a") + (i * 7) % 26) for i in range(400))
    path = tmp_path / "tiny.txt"
    path.write_text(text)
    dm = module(path, tmp_path / "cache", chunk_bytes=16, seq_len=5, batch_size=4, tbptt=True)
    train = dm.splits["train"]
    assert isinstance(train, CharStreams)
    assert isinstance(train.tokens, TokenSlice)
    reference = CharStreams(dm.vocab.encode_corpus(text)[:320], batch_size=4, seq_len=5)
    assert len(train) == len(reference) > 1
    for i in range(len(train)):
        for got, want in zip(train[i], reference[i], strict=True):
            assert got.dtype == torch.int64
            assert torch.equal(got, want)


# ------------------------------------------------------------------------------------------------ the cache
def test_the_cache_is_reused_on_the_second_setup(tmp_path, monkeypatch):
    path = tmp_path / "corpus.txt"
    path.write_text(TEXT * 5, encoding="utf-8")
    first = module(path, tmp_path / "cache", prepare=False)
    assert first.token_file.built
    files = cache_files(tmp_path / "cache")
    assert len(files) == 2  # the tokens (.npy) and the vocabulary with the count (.json)

    def refuse(*args, **kwargs):
        raise AssertionError("the text was read again instead of the cache")

    monkeypatch.setattr(token_cache, "scan_vocab", refuse)
    monkeypatch.setattr(token_cache, "_write_tokens", refuse)
    monkeypatch.setattr(corpus, "iter_text_chunks", refuse)
    second = module(path, tmp_path / "cache", prepare=False)
    assert not second.token_file.built
    assert second.vocab.itos == first.vocab.itos
    np.testing.assert_array_equal(all_tokens(second), all_tokens(first))
    assert cache_files(tmp_path / "cache") == files
    token_cache.check_text(path, tmp_path / "cache")  # the pre-run check skips the full read too
    with pytest.raises(AssertionError, match="read again"):
        module(path, tmp_path / "other-cache")  # the patch is effective when there is no cache


def test_the_cache_is_rebuilt_when_the_file_changes(tmp_path):
    path = tmp_path / "corpus.txt"
    path.write_text("abcd" * 50, encoding="utf-8")
    first = module(path, tmp_path / "cache", prepare=False)
    stat = path.stat()
    path.write_text("abce" * 50, encoding="utf-8")  # same size, another character
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000))
    second = module(path, tmp_path / "cache", prepare=False)
    assert second.token_file.built
    assert second.vocab.itos == ["a", "b", "c", "e"] != first.vocab.itos
    np.testing.assert_array_equal(all_tokens(second), second.vocab.encode_corpus("abce" * 50))
    assert len(cache_files(tmp_path / "cache")) == 2  # the stale version was removed
    assert not list((tmp_path / "cache").glob(".*.tmp"))  # and no temporary file is left
    # the old splits still read the tokens they were built from (their file stays open)
    np.testing.assert_array_equal(all_tokens(first), first.vocab.encode_corpus("abcd" * 50))


def test_a_damaged_token_file_is_rebuilt(tmp_path):
    path = tmp_path / "corpus.txt"
    path.write_text(TEXT * 5, encoding="utf-8")
    token_path = module(path, tmp_path / "cache", prepare=False).token_file.path
    token_path.write_bytes(token_path.read_bytes()[:-10])  # cut short
    again = module(path, tmp_path / "cache", prepare=False)
    assert again.token_file.built
    np.testing.assert_array_equal(all_tokens(again), again.vocab.encode_corpus(TEXT * 5))


def test_an_unwritable_cache_is_one_line(tmp_path):
    path = tmp_path / "corpus.txt"
    path.write_text(TEXT * 5, encoding="utf-8")
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("")
    with pytest.raises(DataError) as info:
        module(path, blocker / "cache")
    assert str(info.value).startswith("paths.cache_dir: cannot write the token cache in ")
    assert "\n" not in str(info.value)


# ------------------------------------------------------------------------------------------------ bad files
def bad_files(tmp_path: Path) -> dict[str, tuple[Path, str]]:
    files = {
        "missing": (tmp_path / "nope.txt", "file not found"),
        "directory": (tmp_path / "adir", "not a regular file"),
        "empty": (tmp_path / "empty.txt", "file is empty"),
        "whitespace": (tmp_path / "blank.txt", "file is empty"),
        "long-whitespace": (tmp_path / "long-blank.txt", "file is empty"),
        "binary": (tmp_path / "bin.txt", "looks binary (contains NUL bytes), expected UTF-8 text"),
        "latin1": (tmp_path / "latin1.txt", "not valid UTF-8 at byte 3"),
    }
    files["directory"][0].mkdir()
    files["empty"][0].write_bytes(b"")
    files["whitespace"][0].write_bytes(b"  \n\t\r\n  ")
    files["long-whitespace"][0].write_bytes(b" \n" * 100_000)  # past the first 64 KiB
    files["binary"][0].write_bytes(b"text\x00\x01\x02 more text")
    files["latin1"][0].write_bytes("caf\u00e9 au lait\n".encode("latin-1"))
    return files


@pytest.mark.parametrize("kind", ["missing", "directory", "empty", "whitespace", "long-whitespace", "binary", "latin1"])
def test_bad_files_give_the_one_line_errors(tmp_path, kind):
    path, what = bad_files(tmp_path)[kind]
    expected = f"data.path: {what}: {path}"
    for load in (
        lambda: module(path, tmp_path / "cache", chunk_bytes=2),
        lambda: token_cache.check_text(path, tmp_path / "cache"),
        lambda: corpus.read_text_file(path),
    ):
        with pytest.raises(DataError) as info:
            load()
        assert str(info.value) == expected
    assert not cache_files(tmp_path / "cache")  # nothing was cached for a bad file


def test_whitespace_then_text_is_not_empty(tmp_path):
    path = tmp_path / "late.txt"
    path.write_bytes(b" " * 100_000 + b"x" * 100)
    assert corpus.check_text_file(path) == path
    assert corpus.read_text_file(path) == " " * 100_000 + "x" * 100


@pytest.mark.parametrize("chunk_bytes", [1, 2, 3, 4, 5, 6, 7, 1024])
def test_the_bad_byte_is_counted_from_the_start_of_the_file(tmp_path, chunk_bytes):
    good = TEXT.encode("utf-8")
    rng = np.random.default_rng(chunk_bytes)
    cases = [good[:k] + b"\xff" + good[k:] for k in rng.integers(0, len(good), size=6)]
    cases += [good + "\u00e9".encode()[:1], good + "\U0001f600".encode()[:3]]  # a character cut by the end
    cases += [good[:10] + "\u4e00".encode()[:2] + b"x" + good[10:]]  # a 3-byte character missing its last byte
    for i, raw in enumerate(cases):
        path = tmp_path / f"bad{i}.txt"
        path.write_bytes(raw)
        with pytest.raises(UnicodeDecodeError) as reference:
            raw.decode("utf-8")
        with pytest.raises(DataError) as info:
            list(corpus.iter_text_chunks(path, chunk_bytes))
        assert str(info.value) == f"data.path: not valid UTF-8 at byte {reference.value.start}: {path}"


@pytest.mark.cli
def test_a_bad_file_is_refused_before_the_run_starts(tmp_path):
    path, _ = bad_files(tmp_path)["latin1"]
    result = subprocess.run(
        [str(Path(sys.executable).parent / "rnnlab-train"), "data=text_file", f"data.path={path}",
         f"paths.output_dir={tmp_path}/out"],
        cwd=tmp_path, capture_output=True, text=True, timeout=120,
        env={k: v for k, v in os.environ.items() if k != "HYDRA_FULL_ERROR"},
    )  # fmt: skip
    assert result.returncode == 1
    assert result.stderr.strip() == f"rnnlab: error: data.path: not valid UTF-8 at byte 3: {path}"
    assert not list((tmp_path / "out").rglob("config_resolved.yaml"))  # refused before anything was set up


# ---------------------------------------------------------------------------------------------------- memory
def big_text(n_chars: int) -> str:
    rng = np.random.default_rng(0)
    letters = np.frombuffer(b"abcdefghijklmnopqrstuvwxyz  \n", dtype=np.uint8)
    return rng.choice(letters, size=n_chars).tobytes().decode("ascii") + "\u00e9\U0001f600\n"


def test_the_splits_hold_the_token_file_not_an_array(tmp_path):
    path = tmp_path / "big.txt"
    path.write_text(big_text(200_000), encoding="utf-8")
    dm = module(path, tmp_path / "cache", seq_len=50, batch_size=8)
    for split in ("train", "val", "test"):
        ds = dm.splits[split]
        assert isinstance(ds.tokens, TokenSlice)
        assert ds.tokens.path == dm.token_file.path
        assert ds.tokens.path.parent == tmp_path / "cache"
        arrays = [v for v in vars(ds).values() if isinstance(v, np.ndarray | torch.Tensor)]
        assert all(a.nbytes < 1000 for a in arrays), [a.shape for a in arrays]  # nothing corpus-sized in memory
    assert not [v for v in vars(dm).values() if isinstance(v, np.ndarray | torch.Tensor | str) and len(v) > 1000]


def test_a_batch_copies_only_its_windows(tmp_path):
    path = tmp_path / "big.txt"
    path.write_text(big_text(2_000_000), encoding="utf-8")  # 2 MB of tokens on disk
    dm = module(path, tmp_path / "cache", seq_len=50, batch_size=8, val_fraction=0.05, test_fraction=0.05)
    train = dm.splits["train"]
    streams = module(path, tmp_path / "cache", seq_len=50, batch_size=8, tbptt=True).splits["train"]
    tracemalloc.start()
    try:
        for indices in ([0, 1, 2, 3, 4, 5, 6, 7], [len(train) - 1, 1000, 17, 5, 30_000, 2, 9, 11]):
            tracemalloc.reset_peak()
            before = tracemalloc.get_traced_memory()[0]
            x, y = train.collate(indices)
            peak = tracemalloc.get_traced_memory()[1] - before
            assert x.shape == y.shape == (8, 50)
            assert peak < 32 * 1024, peak  # the batch: 8 x 51 tokens, as uint8 then int64 (a few KB)
        tracemalloc.reset_peak()
        before = tracemalloc.get_traced_memory()[0]
        x, y = streams[len(streams) - 1]
        assert tracemalloc.get_traced_memory()[1] - before < 32 * 1024
    finally:
        tracemalloc.stop()
    reference = dm.vocab.encode_corpus(corpus.read_text_file(path))
    for row, start in enumerate(streams.stream_starts + (len(streams) - 1) * 50):
        assert x[row].tolist() == reference[start : start + 50].tolist()
    x, _ = train.collate([len(train) - 1])
    start = (len(train) - 1) * 50
    assert x[0].tolist() == reference[start : start + 50].tolist()


def test_setup_memory_is_bounded_by_the_chunk_not_the_corpus(tmp_path):
    """tracemalloc sees every Python and NumPy allocation: encoding a 4 MB file in 64 KiB chunks must peak at a
    few chunks. (Reading it whole, as before the token cache, peaks above 30 MB: text, UTF-32 copy, ids.)"""
    path = tmp_path / "big.txt"
    path.write_text(big_text(4_000_000), encoding="utf-8")
    chunk = 64 * 1024
    dm = CharCorpusDataModule("text_file", str(path), seq_len=50, val_fraction=0.05, test_fraction=0.05,
                              batch_size=8, cache_dir=str(tmp_path / "cache"), chunk_bytes=chunk)  # fmt: skip
    tracemalloc.start()
    try:
        dm.setup("fit")  # builds the token file (no prepare_data before it)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert dm.token_file.built
    assert dm.token_file.n == 4_000_003
    # measured 0.75 MB (the chunk, its ids, NumPy's int64 copy of the indices); a single whole copy of the text
    # would already be 4 MB
    assert peak < 2 * 2**20, peak


def test_a_pickled_split_opens_the_file_again(tmp_path):
    """A spawned loader worker receives the dataset pickled: the file name and bounds, not the tokens."""
    path = tmp_path / "big.txt"
    path.write_text(big_text(100_000), encoding="utf-8")
    train = module(path, tmp_path / "cache", seq_len=50, batch_size=8).splits["train"]
    blob = pickle.dumps(train)
    assert len(blob) < 2000
    copy = pickle.loads(blob)
    assert isinstance(copy.tokens, TokenSlice)
    for got, want in zip(copy.collate([3, 1, 400]), train.collate([3, 1, 400]), strict=True):
        assert torch.equal(got, want)


def test_the_epoch_order_is_the_same_permutation_in_4_bytes_a_window():
    """What remains O(corpus) in a shuffled epoch is its order: the permutation of the windows that
    default_rng((seed, epoch)).permutation(n) draws, kept as int32 and handed out lazily."""
    from rnnlab.data.sampling import EpochSeededSampler

    n = 100_003
    sampler = EpochSeededSampler(n, seed=42)
    sampler.set_epoch(2)
    tracemalloc.start()
    try:
        order = iter(sampler)
        held = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert held < 5 * n, held  # int32: 4 bytes a window (int64 would be 8, a list of Python ints ~36)
    assert list(order) == np.random.default_rng((42, 2)).permutation(n).tolist()
