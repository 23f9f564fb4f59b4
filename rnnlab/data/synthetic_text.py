"""A generated text-classification set in the setting of the seed study (10,000 strings, 80/20 split).

Rule: each string has a length drawn uniformly from [min_len, max_len] and characters drawn uniformly from
"abcdefgh". Its label is the letter, among the first ``num_classes`` letters of that alphabet, that occurs most
often in the string (label 0 for "a", 1 for "b", ...). Strings whose top count is tied are redrawn. The label
therefore depends on every position, not only on the end, and a model has to count across the sequence.
The generator has its own seed (``data.generator_seed``): every run and both backends see the same data.
"""

from __future__ import annotations

import numpy as np

ALPHABET = "abcdefgh"


def generate(
    num_samples: int, min_len: int, max_len: int, num_classes: int, seed: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Returns (ids [N, max_len] int64 padded with -1, lengths [N], labels [N]); ids index ALPHABET."""
    if not 2 <= num_classes <= len(ALPHABET):
        raise ValueError(f"num_classes must be in [2, {len(ALPHABET)}]")
    rng = np.random.default_rng(seed)
    ids = np.full((num_samples, max_len), -1, dtype=np.int64)
    lengths = np.zeros(num_samples, dtype=np.int64)
    labels = np.zeros(num_samples, dtype=np.int64)
    filled = 0
    positions = np.arange(max_len)
    while filled < num_samples:
        n = (num_samples - filled) * 2 + 16
        lens = rng.integers(min_len, max_len + 1, size=n)
        chars = rng.integers(0, len(ALPHABET), size=(n, max_len))
        chars[positions[None, :] >= lens[:, None]] = -1
        counts = np.stack([(chars == c).sum(axis=1) for c in range(num_classes)], axis=1)
        top = counts.max(axis=1)
        unique_top = (counts == top[:, None]).sum(axis=1) == 1
        keep = np.flatnonzero(unique_top)[: num_samples - filled]
        k = len(keep)
        ids[filled : filled + k] = chars[keep]
        lengths[filled : filled + k] = lens[keep]
        labels[filled : filled + k] = counts[keep].argmax(axis=1)
        filled += k
    return ids, lengths, labels


def decode(ids_row: np.ndarray) -> str:
    return "".join(ALPHABET[i] for i in ids_row if i >= 0)
