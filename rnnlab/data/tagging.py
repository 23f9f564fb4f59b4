"""Sequence-labelling data, one label per token (task=tag): the copy-memory task (data=copy) and generated named
entities (data=ner_synth). Both come from fixed-seed generators (``data.generator_seed``), so every run and both
backends see the same data. Batches are (ids [B, T], lengths [B], labels [B, T]) with label -100 wherever nothing
is to be predicted (padding, and the copy task's non-recall steps).

Copy memory (Hochreiter & Schmidhuber 1997; Arjovsky et al. 2016): a sequence shows ``copy_length`` symbols drawn
from ``num_symbols`` letters, then ``length`` blanks (the delay; the last one is replaced by a ``<go>`` marker),
then ``copy_length`` blanks during which the network must output the symbols in order. Only those recall steps are
scored; guessing scores 1 / num_symbols.

Named entities: sentences from templates whose slots are filled with person, organisation, location and
miscellaneous names (multi-word entities, and names such as "Jordan" or "Washington" that are a person in one
template and a place in another), tagged in BIO over PER, ORG, LOC and MISC; a fifth of the sentences have no
entity. Tokens keep their case (capitals are evidence). The vocabulary is built on the training split, whose names
come from three quarters of each list: a quarter of the names in validation and test are unseen (``<unk>``) and
must be recognised from their context.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from rnnlab.data.datamodules import PAD, _Loaders
from rnnlab.data.vocab import CharVocab
from rnnlab.errors import DataError

IGNORE = -100
SPLITS = ("train", "val", "test")


class TaggedSequences(Dataset):
    """Padded token ids and per-token labels; ``collate`` trims a batch to its longest sequence."""

    def __init__(self, ids: np.ndarray, lengths: np.ndarray, labels: np.ndarray):
        self.ids = torch.as_tensor(ids)
        self.lengths = torch.as_tensor(lengths)
        self.labels = torch.as_tensor(labels)

    def __len__(self) -> int:
        return len(self.lengths)

    def __getitem__(self, i: int) -> int:
        return i

    def collate(self, indices: list[int]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        idx = torch.as_tensor(indices)
        lengths = self.lengths[idx]
        t = int(lengths.max())
        return self.ids[idx, :t], lengths, self.labels[idx, :t]


# ------------------------------------------------------------------------------------------------- copy task
def copy_task(num: int, copy_length: int, delay: int, num_symbols: int, rng: np.random.Generator):
    """ids [num, 2K + delay] (0 blank, 1..num_symbols letters, num_symbols + 1 the <go> marker) and labels
    (the letter ids at the K recall steps, -100 elsewhere)."""
    k = copy_length
    symbols = rng.integers(1, num_symbols + 1, size=(num, k))
    ids = np.zeros((num, 2 * k + delay), dtype=np.int64)
    ids[:, :k] = symbols
    ids[:, k + delay - 1] = num_symbols + 1
    labels = np.full(ids.shape, IGNORE, dtype=np.int64)
    labels[:, k + delay :] = symbols
    return ids, labels


class CopyDataModule(_Loaders):
    def __init__(self, copy_length: int, length: int, num_symbols: int, sizes: dict[str, int], generator_seed: int,
                 batch_size: int, num_workers: int = 0, pin_memory: bool = False, seed: int = 0):  # fmt: skip
        super().__init__(batch_size, num_workers, pin_memory, seed)
        self.copy_length, self.length, self.num_symbols = copy_length, length, num_symbols
        self.sizes, self.generator_seed = sizes, generator_seed
        self.vocab = CharVocab(["<blank>", *(chr(ord("a") + i) for i in range(num_symbols)), "<go>"])
        self.num_outputs = len(self.vocab)
        self.label_names = self.vocab.itos

    def setup(self, stage: str | None = None) -> None:
        if self.splits:
            return
        streams = np.random.SeedSequence([self.generator_seed, self.copy_length, self.length]).spawn(3)
        for split, stream in zip(SPLITS, streams, strict=True):
            ids, labels = copy_task(self.sizes[split], self.copy_length, self.length, self.num_symbols,
                                    np.random.default_rng(stream))  # fmt: skip
            self.splits[split] = TaggedSequences(ids, np.full(len(ids), ids.shape[1]), labels)


# ---------------------------------------------------------------------------------------- named entities
FIRST = ["John", "Mary", "Ahmed", "Li", "Sofia", "Pierre", "Anna", "Carlos", "Yuki", "Olga", "David", "Fatima",
         "Jordan", "Grace", "Ivan", "Amara", "Lucas", "Priya", "Mohammed", "Elena"]  # fmt: skip
LAST = ["Smith", "Garcia", "Chen", "Müller", "Rossi", "Okafor", "Tanaka", "Novak", "Dubois", "Kowalski", "Silva",
        "Khan", "Washington", "Lee", "Johnson", "Ivanova", "Haddad", "Nakamura", "Brown", "Costa"]  # fmt: skip
ORG = ["Acme Corp", "United Nations", "Red Cross", "Siemens", "Toyota", "World Bank", "Oxford University",
       "General Electric", "Reuters", "FIFA", "Deutsche Bank", "Nokia", "Greenpeace", "Bank of Japan",
       "Apple", "Amazon", "European Commission", "BBC"]  # fmt: skip
LOC = ["Paris", "New York", "Tokyo", "Lagos", "Berlin", "São Paulo", "Jordan", "Washington", "Cairo", "Mumbai",
       "Lake Victoria", "the Alps", "Buenos Aires", "Sydney", "Kenya", "Canada", "Hong Kong", "Madrid"]  # fmt: skip
MISC = ["French", "Olympic Games", "World Cup", "Japanese", "Nobel Prize", "Christmas", "Brazilian", "Euro",
        "Tour de France", "German", "Oscar", "Ramadan", "Champions League", "Italian"]  # fmt: skip
TEMPLATES = [
    "{PER} works for {ORG} in {LOC} .",
    "{PER} met {PER} at the {MISC} .",
    "The {ORG} office in {LOC} opened on Monday .",
    "{ORG} signed a deal with {ORG} , {PER} said .",
    "{PER} flew from {LOC} to {LOC} last week .",
    "A {MISC} team won the {MISC} in {LOC} .",
    "According to {ORG} , prices in {LOC} rose again .",
    "{PER} , a {MISC} engineer , joined {ORG} .",
    "Fans in {LOC} celebrated the {MISC} all night .",
    "{PER} will visit {LOC} before the {MISC} .",
]
NO_ENTITY = [
    "The weather was cold and the trains were late .",
    "Prices rose again this year , analysts said .",
    "She said the plan would be ready next week .",
    "Nobody expected the meeting to last so long .",
    "The new bridge will open in the spring .",
    "Sales fell sharply after the holiday season .",
]
TYPES = ("PER", "ORG", "LOC", "MISC")
LABELS = ["O", *(f"{p}-{t}" for t in TYPES for p in ("B", "I"))]


SEEN_FRACTION = 0.75  # the training split draws names from the first 75 % of each list only


def _pool(names: list[str], seen_only: bool) -> list[str]:
    return names[: int(len(names) * SEEN_FRACTION)] if seen_only else names


def ner_sentence(rng: np.random.Generator, seen_only: bool = False) -> tuple[list[str], list[str]]:
    """One sentence (tokens) and its BIO tags. With ``seen_only`` (the training split) names come from the first
    75 % of each list; validation and test draw from whole lists, so a quarter of their names were never seen in
    training (they become <unk>) and can only be recognised from their context."""
    if rng.random() < 0.2:
        tokens = NO_ENTITY[rng.integers(len(NO_ENTITY))].split()
        return tokens, ["O"] * len(tokens)
    tokens: list[str] = []
    tags: list[str] = []
    for piece in TEMPLATES[rng.integers(len(TEMPLATES))].split():
        if piece.startswith("{") and piece.endswith("}"):
            kind = piece[1:-1]
            if kind == "PER":
                first, last = _pool(FIRST, seen_only), _pool(LAST, seen_only)
                name = first[rng.integers(len(first))].split()
                if rng.random() < 0.7:
                    name = [*name, last[rng.integers(len(last))]]
            else:
                pool = _pool({"ORG": ORG, "LOC": LOC, "MISC": MISC}[kind], seen_only)
                name = pool[rng.integers(len(pool))].split()
            if name[0] == "the":  # "the Alps": the article is not part of the entity
                tokens.append("the")
                tags.append("O")
                name = name[1:]
            tokens += name
            tags += [f"B-{kind}"] + [f"I-{kind}"] * (len(name) - 1)
        else:
            tokens.append(piece)
            tags.append("O")
    return tokens, tags


class NerDataModule(_Loaders):
    def __init__(self, sizes: dict[str, int], generator_seed: int, batch_size: int, num_workers: int = 0,
                 pin_memory: bool = False, seed: int = 0):  # fmt: skip
        super().__init__(batch_size, num_workers, pin_memory, seed)
        self.sizes, self.generator_seed = sizes, generator_seed
        self.pad_id = 0
        self.label_names = LABELS
        self.num_outputs = len(LABELS)
        self.vocab = CharVocab([PAD, "<unk>"])

    def setup(self, stage: str | None = None) -> None:
        if self.splits:
            return
        streams = np.random.SeedSequence([self.generator_seed, 7]).spawn(3)
        data = {}
        for split, stream in zip(SPLITS, streams, strict=True):
            rng = np.random.default_rng(stream)
            data[split] = [ner_sentence(rng, seen_only=split == "train") for _ in range(self.sizes[split])]
        words = sorted({tok for tokens, _ in data["train"] for tok in tokens})
        self.vocab = CharVocab([PAD, "<unk>", *words])
        label_id = {name: i for i, name in enumerate(LABELS)}
        for split, sentences in data.items():
            n, t = len(sentences), max(len(tokens) for tokens, _ in sentences)
            ids = np.zeros((n, t), dtype=np.int64)
            labels = np.full((n, t), IGNORE, dtype=np.int64)
            lengths = np.zeros(n, dtype=np.int64)
            for i, (tokens, tags) in enumerate(sentences):
                ids[i, : len(tokens)] = [self.vocab.stoi.get(tok, 1) for tok in tokens]
                labels[i, : len(tags)] = [label_id[tag] for tag in tags]
                lengths[i] = len(tokens)
            self.splits[split] = TaggedSequences(ids, lengths, labels)


# -------------------------------------------------------------------------------------------- entity spans
def spans(tags: list[str]) -> set[tuple[str, int, int]]:
    """Entity spans (type, start, end exclusive) of a BIO tag sequence, as conlleval reads them: a span starts at
    B-X, or at I-X that does not continue an X span, and runs over the following I-X tags."""
    found = set()
    start, kind = None, None
    for i, tag in enumerate([*tags, "O"]):
        prefix, _, t = tag.partition("-")
        continues = prefix == "I" and t == kind
        if start is not None and not continues:
            found.add((kind, start, i))
            start, kind = None, None
        if prefix in ("B", "I") and not continues:
            start, kind = i, t
    return found


def entity_scores(true_tags: list[list[str]], pred_tags: list[list[str]]) -> tuple[float, float, float]:
    """Precision, recall and F1 of exact-match entity spans over a corpus (0 when undefined)."""
    tp = n_pred = n_true = 0
    for t, p in zip(true_tags, pred_tags, strict=True):
        ts, ps = spans(t), spans(p)
        tp += len(ts & ps)
        n_pred += len(ps)
        n_true += len(ts)
    precision = tp / n_pred if n_pred else 0.0
    recall = tp / n_true if n_true else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return precision, recall, f1


def _sizes(data_cfg: Any) -> dict[str, int]:
    return {"train": data_cfg.num_train, "val": data_cfg.num_val, "test": data_cfg.num_test}


def build_copy(data_cfg: Any, seed: int, cache_dir: str | None, **common: Any) -> CopyDataModule:
    if data_cfg.length < 1 or data_cfg.copy_length < 1:
        raise DataError("data.length and data.copy_length must be >= 1 for data=copy")
    return CopyDataModule(data_cfg.copy_length, data_cfg.length, data_cfg.num_symbols, _sizes(data_cfg),
                          data_cfg.generator_seed, seed=seed, **common)  # fmt: skip


def build_ner(data_cfg: Any, seed: int, cache_dir: str | None, **common: Any) -> NerDataModule:
    return NerDataModule(_sizes(data_cfg), data_cfg.generator_seed, seed=seed, **common)
