"""Character corpora as token files on disk: encoded by streaming the text, read back one batch at a time.

A text (data=text_file's file, or the cached Shakespeare text) is read in chunks of ``CHUNK_BYTES``, twice. The
first pass collects its characters (the vocabulary, ordered like ``CharVocab.from_text``: by code point) and
counts them; the second encodes chunk after chunk into ``<cache>/tokens-<name>-...npy``, a NumPy .npy file of
uint8 when the vocabulary has at most 256 symbols (uint16 up to 65,536, else int32), written to a temporary file
and renamed into place. A ``.json`` beside it holds the vocabulary and the count. Both are keyed on the text's
absolute path, size and mtime_ns (the token file on the vocabulary too): a later run on the same file reads
neither the text nor the tokens at setup, an edited file is encoded again and the stale files of that path are
removed. Memory during the build is a few chunks, whatever the size of the text: chunks of pure ASCII are used
as read (their bytes are their code points); the others are decoded and encoded as UTF-32. The chunks are small
(64 KiB) on purpose: with chunks of megabytes, glibc's malloc keeps the freed chunk-sized blocks of one chunk in
its heap and the next chunk's differently sized ones beside them, and the resident size climbed by tens of MB
over a 50 MB text; with 64 KiB it stays within a few MB, and the build is as fast.

Training reads its windows from the token file with positional reads (:class:`TokenSlice`): one read per row of
a batch, so the process holds the batch, not the corpus. (A memory map of the file would not stay small: every
page a window touches stays mapped into the process, and the kernel maps whole neighbourhoods of page cache at
each fault, so the resident size grows towards the file size as training samples windows from all over it.)
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from numpy.lib import format as npy_format

from rnnlab.atomic import atomic_file
from rnnlab.data import corpus
from rnnlab.data.vocab import CharVocab
from rnnlab.errors import DataError

# bump when the token file layout or the encoding changes; every cache key includes it
FORMAT_VERSION = 2  # 2: a leading UTF-8 byte-order mark is skipped
CHUNK_BYTES = corpus.CHUNK_BYTES


def token_dtype(vocab_size: int) -> np.dtype:
    """The smallest integer type that holds ids 0 .. vocab_size - 1 (uint8, uint16, else int32)."""
    if vocab_size <= 256:
        return np.dtype(np.uint8)
    if vocab_size <= 65536:
        return np.dtype(np.uint16)
    return np.dtype(np.int32)


class TokenSlice:
    """Tokens ``[start, start + length)`` of a token file, read on demand with positional reads.

    ``rows(starts, width)`` returns ``[len(starts), width]`` tokens, ``tokens[s : s + width]`` for each start s,
    with one read per row; ``np.asarray(token_slice)`` reads the whole slice. The file stays open while the slice
    lives; a pickled slice (a spawned loader worker) carries the file name and bounds and opens the file again.
    """

    def __init__(self, path: str | os.PathLike, data_offset: int, dtype: Any, start: int, length: int):
        self.path = Path(path)
        self.data_offset = int(data_offset)
        self.dtype = np.dtype(dtype)
        self.start = int(start)
        self.length = int(length)
        self._file = open(self.path, "rb", buffering=0)  # noqa: SIM115  (closed with the slice)

    def __len__(self) -> int:
        return self.length

    def __repr__(self) -> str:
        return f"TokenSlice({str(self.path)!r}, start={self.start}, length={self.length}, dtype={self.dtype})"

    def _read(self, first: int, count: int) -> bytes:
        offset = self.data_offset + (self.start + first) * self.dtype.itemsize
        size = count * self.dtype.itemsize
        if hasattr(os, "pread"):  # no shared file position: safe in forked loader workers
            data = os.pread(self._file.fileno(), size, offset)
        else:  # Windows has no pread; its loader workers are spawned, each with a file of its own
            self._file.seek(offset)
            data = self._file.read(size)
        if len(data) != size:
            raise DataError(f"token file {self.path} is shorter than its header says; delete it to rebuild it")
        return data

    def rows(self, starts: Any, width: int) -> np.ndarray:
        starts = np.asarray(starts, dtype=np.int64).reshape(-1)
        if starts.size and (int(starts.min()) < 0 or int(starts.max()) + width > self.length):
            raise IndexError(f"rows of {width} tokens from {starts.min()}..{starts.max()}: the slice has {self.length}")
        data = b"".join(self._read(int(s), width) for s in starts)
        return np.frombuffer(data, dtype=self.dtype).reshape(starts.size, width)

    def read(self) -> np.ndarray:
        """The whole slice in memory."""
        return np.frombuffer(self._read(0, self.length), dtype=self.dtype)

    def __array__(self, dtype: Any = None, copy: bool | None = None) -> np.ndarray:
        tokens = self.read()
        return tokens if dtype is None else tokens.astype(dtype)

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        del state["_file"]
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._file = open(self.path, "rb", buffering=0)  # noqa: SIM115

    def __del__(self) -> None:
        file = self.__dict__.get("_file")
        if file is not None:
            file.close()


@dataclass(frozen=True)
class TokenFile:
    """An encoded text: ``n`` ids of ``vocab`` in the .npy file ``path`` (data after ``data_offset`` bytes)."""

    path: Path
    data_offset: int
    dtype: np.dtype
    n: int
    vocab: CharVocab
    source: Path  # the text it encodes
    built: bool  # False when it came from the cache

    def slice(self, start: int, stop: int) -> TokenSlice:
        return TokenSlice(self.path, self.data_offset, self.dtype, start, stop - start)


def cached_tokens(
    text_path: str | os.PathLike, cache_dir: str | os.PathLike | None = None, chunk_bytes: int = CHUNK_BYTES
) -> TokenFile:
    """The token file of ``text_path`` in the cache (``corpus.cache_root``), built first when it is missing or
    stale. Bad text files give the one-line DataErrors of ``corpus.check_text_file`` / ``iter_text_chunks``."""
    source = corpus.check_text_file(text_path).resolve()
    stat = source.stat()
    root = corpus.cache_root(cache_dir)
    stem, meta_path = _names(source, stat, root)
    cached = _load(meta_path, source, stat)
    if cached is not None:
        return cached

    itos, n = scan_vocab(source, chunk_bytes)
    vocab = CharVocab(itos)
    dtype = token_dtype(len(itos))
    token_path = root / f"{stem}-{_digest(stat.st_size, stat.st_mtime_ns, FORMAT_VERSION, *itos)[:16]}.npy"
    try:
        root.mkdir(parents=True, exist_ok=True)
        data_offset = _write_tokens(source, vocab, n, dtype, token_path, chunk_bytes)
        now = source.stat()
        if (now.st_size, now.st_mtime_ns) != (stat.st_size, stat.st_mtime_ns):
            token_path.unlink(missing_ok=True)
            raise DataError(f"data.path: the file changed while it was being encoded; run again: {source}")
        meta = dict(format=FORMAT_VERSION, source=str(source), size=stat.st_size, mtime_ns=stat.st_mtime_ns,
                    n=n, dtype=dtype.str, tokens=token_path.name, itos=itos)  # fmt: skip
        corpus._atomic_write(meta_path, json.dumps(meta))
    except OSError as err:
        if err.filename is not None and Path(err.filename) == source:
            raise
        raise DataError(f"paths.cache_dir: cannot write the token cache in {root}: {err.strerror or err}") from None
    for stale in root.glob(f"{stem}-*"):  # earlier versions of the same file
        if stale.name not in (meta_path.name, token_path.name):
            stale.unlink(missing_ok=True)
    return TokenFile(token_path, data_offset, dtype, n, vocab, source, built=True)


def check_text(text_path: str | os.PathLike, cache_dir: str | os.PathLike | None = None,
               chunk_bytes: int = CHUNK_BYTES) -> Path:  # fmt: skip
    """Every check of a text before a run, the UTF-8 one included (streamed: memory stays at one chunk), or only
    the cheap ones of ``corpus.check_text_file`` when the cache already holds the tokens of the file as it is now
    (it was read in full when they were built). The same one-line DataErrors as ``cached_tokens``."""
    path = corpus.check_text_file(text_path)
    source = path.resolve()
    stat = source.stat()
    if _load(_names(source, stat, corpus.cache_root(cache_dir))[1], source, stat) is None:
        for _ in corpus.iter_text_chunks(path, chunk_bytes):
            pass
    return path


def scan_vocab(path: str | os.PathLike, chunk_bytes: int = CHUNK_BYTES) -> tuple[list[str], int]:
    """The sorted characters of a text file and its length in characters, read ``chunk_bytes`` at a time:
    ``(CharVocab.from_text(text).itos, len(text))`` without holding ``text``."""
    seen = np.zeros(128, dtype=bool)  # seen[c]: code point c occurs; grown to the largest code point met
    n = 0
    for chunk in corpus.iter_decoded(path, chunk_bytes):
        points = _code_points(chunk)
        del chunk
        top = int(points.max()) + 1
        if top > len(seen):
            seen = np.concatenate([seen, np.zeros(top - len(seen), dtype=bool)])
        seen[points] = True
        n += len(points)
    return [chr(c) for c in np.flatnonzero(seen)], n


def _code_points(chunk: str | bytes) -> np.ndarray:
    """The code points of a chunk of ``corpus.iter_decoded``: uint8 for ASCII (a view of its bytes), else uint32."""
    if isinstance(chunk, bytes):
        return np.frombuffer(chunk, dtype=np.uint8)
    if chunk.isascii():
        return np.frombuffer(chunk.encode("ascii"), dtype=np.uint8)
    return np.frombuffer(chunk.encode("utf-32-le"), dtype=np.uint32)


def _write_tokens(source: Path, vocab: CharVocab, n: int, dtype: np.dtype, target: Path, chunk_bytes: int) -> int:
    """Encode ``source`` chunk by chunk into the .npy file ``target`` (atomically); returns the header size."""
    codes = np.fromiter((ord(ch) for ch in vocab.itos), dtype=np.int64, count=len(vocab))
    table = np.zeros(int(codes.max()) + 1, dtype=dtype)  # code point -> id
    table[codes] = np.arange(len(vocab))
    known = np.zeros(len(table), dtype=bool)
    known[codes] = True
    changed = DataError(f"data.path: the file changed while it was being encoded; run again: {source}")
    with atomic_file(target) as fh:
        header = {"descr": npy_format.dtype_to_descr(dtype), "fortran_order": False, "shape": (n,)}
        npy_format.write_array_header_1_0(fh, header)
        data_offset = fh.tell()
        written = 0
        for chunk in corpus.iter_decoded(source, chunk_bytes):
            points = _code_points(chunk)
            del chunk
            written += len(points)
            if written > n or int(points.max()) >= len(table) or not known[points].all():
                raise changed
            ids = table[points]
            del points
            fh.write(ids)
            del ids
        if written != n:
            raise changed
    return data_offset


def _names(source: Path, stat: os.stat_result, root: Path) -> tuple[str, Path]:
    """The prefix of every cache file of ``source`` and the name of the .json of its current version."""
    stem = f"tokens-{_safe_name(source.name)}-{_digest(str(source))[:12]}"
    return stem, root / f"{stem}-{_digest(stat.st_size, stat.st_mtime_ns, FORMAT_VERSION)[:12]}.json"


def _load(meta_path: Path, source: Path, stat: os.stat_result) -> TokenFile | None:
    """The cached token file described by ``meta_path``, or None when it is missing, stale or damaged."""
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
        expected = (FORMAT_VERSION, str(source), stat.st_size, stat.st_mtime_ns)
        if (meta["format"], meta["source"], meta["size"], meta["mtime_ns"]) != expected:
            return None
        itos, n, dtype = list(meta["itos"]), int(meta["n"]), np.dtype(meta["dtype"])
        token_path = meta_path.parent / meta["tokens"]
        with open(token_path, "rb") as fh:
            version = npy_format.read_magic(fh)
            read_header = npy_format.read_array_header_1_0 if version == (1, 0) else npy_format.read_array_header_2_0
            shape, fortran, file_dtype = read_header(fh)
            data_offset = fh.tell()
        if (shape, fortran, file_dtype) != ((n,), False, dtype) or dtype != token_dtype(len(itos)):
            return None
        if token_path.stat().st_size != data_offset + n * dtype.itemsize:
            return None
        return TokenFile(token_path, data_offset, dtype, n, CharVocab(itos), source, built=False)
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _digest(*parts: Any) -> str:
    return hashlib.sha256(json.dumps([str(p) for p in parts]).encode()).hexdigest()


def _safe_name(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name)[:40] or "text"
