"""Character vocabularies: a sorted list of symbols, saved with every checkpoint."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np


class CharVocab:
    """Maps characters to ids 0..V-1 and back. ``itos`` is the whole state (it goes into checkpoints)."""

    def __init__(self, itos: Sequence[str]):
        if len(set(itos)) != len(itos):
            raise ValueError("vocabulary symbols must be unique")
        self.itos = list(itos)
        self.stoi = {ch: i for i, ch in enumerate(self.itos)}

    @classmethod
    def from_text(cls, text: str | Iterable[str]) -> CharVocab:
        return cls(sorted(set(text)))

    def __len__(self) -> int:
        return len(self.itos)

    def encode(self, text: str) -> np.ndarray:
        """Ids of ``text`` as int64; raises KeyError naming the first unknown character."""
        try:
            return np.fromiter((self.stoi[ch] for ch in text), dtype=np.int64, count=len(text))
        except KeyError as err:
            raise KeyError(f"character {err.args[0]!r} is not in the vocabulary") from None

    def encode_corpus(self, text: str) -> np.ndarray:
        """Fast encoding of a long text: one table lookup over its code points (int32 to halve memory)."""
        codes = np.frombuffer(text.encode("utf-32-le"), dtype=np.uint32)
        table = np.full(int(codes.max(initial=0)) + 1, -1, dtype=np.int32)
        for ch, i in self.stoi.items():
            if ord(ch) < len(table):
                table[ord(ch)] = i
        ids = table[codes]
        if (ids < 0).any():
            bad = text[int(np.argmax(ids < 0))]
            raise KeyError(f"character {bad!r} is not in the vocabulary")
        return ids

    def decode(self, ids: Iterable[int]) -> str:
        return "".join(self.itos[int(i)] for i in ids)
