"""Synthetic sequence problems with known answers, from fixed-seed generators: the adding problem (data=adding,
task=regress), the copy-memory task and generated named entities (data=copy and data=ner_synth, task=tag).

Every split comes from its own generator stream derived from ``data.generator_seed`` (``np.random.SeedSequence``
spawned once per split), so every run and both backends see the same sequences whatever the run's ``seed``; the
run's seed only shuffles the training order (EpochSeededSampler). ``data.num_train`` / ``num_val`` / ``num_test``
set the split sizes.

**Adding problem** (Hochreiter & Schmidhuber 1997; in the form of Le, Jaitly & Hinton 2015). A sequence has
``length`` steps of two features: a value u_t ~ U(0, 1) and a marker m_t, 1 at exactly two steps (one drawn
uniformly from the first half [0, T//2), one from the second half [T//2, T)) and 0 elsewhere. The target is
y = sum_t m_t u_t. Predicting the constant mean E[y] = 1 scores MSE Var(u1 + u2) = 2/12 = 0.1667 (logged as
``mse_baseline``); solving the task means carrying a value across up to T steps, which a vanilla RNN trained by
gradient descent cannot do for long sequences: the gradient vanishes on the way back (rnnlab.analysis). Batches
are (x [B, T, 2] float32, y [B, 1] float32); the network takes float features (``NetSpec.input_features=2``).

**Copy memory** (Hochreiter & Schmidhuber 1997; Arjovsky, Shah & Bengio 2016). With K = ``copy_length``, L =
``length`` and N = ``num_symbols``, a sequence of 2K + L + 1 tokens is

    s_1 .. s_K   <blank> x L   <go>   <blank> x K
    -100 ..                -100       s_1 .. s_K        (labels)

token ids: 0 <blank>, 1..N the symbols (drawn uniformly, with repetition), N + 1 the ``<go>`` delimiter. Symbol
s_i must be carried from step i - 1 to step K + L + i: a distance of K + L + 1 steps for every symbol. Only the K
recall steps are labelled; every other step has label -100 (ignored by the loss and the accuracy), so
``val/acc`` is the fraction of recalled symbols, and guessing scores 1/N. All sequences have the same length.

**Named entities** (ner_synth): sentences from a small grammar, tagged in BIO over PER, ORG, LOC and MISC
(9 labels: O, B-PER, I-PER, B-ORG, I-ORG, B-LOC, I-LOC, B-MISC, I-MISC)::

    SENTENCE  -> ENTITY_TEMPLATE (p = 0.8) | PLAIN_TEMPLATE (p = 0.2, no entity at all)
    *_TEMPLATE-> a sentence of words and slots, one of ``TEMPLATES`` / ``PLAIN``, uniformly
    {PER}     -> FIRST LAST (0.45) | FIRST (0.15) | TITLE LAST (0.15) | TITLE FIRST LAST (0.1) | FIRST X. LAST (0.15)
    {ORG}     -> one of ORG          {LOC} -> one of LOC
    {NAT}, {EVENT}, {PRIZE}, {HOLIDAY}, {LANG}, {PRODUCT} -> one of MISC_SLOTS[...], all tagged MISC
    {DAY}, {MONTH}, {NUM}, {SAY}, {TIME}    -> filler words, always tagged O

A TITLE ("Dr.", "President", ...) precedes the name and is tagged O (as in CoNLL); a middle initial ("X.") is
inside the PER span. Entities of several words (``"Bank of Japan"``,
``"Rio de Janeiro"``, ``"van Dijk"``) are tagged B-X I-X ...; a leading "the" (``"the Alps"``) is O. Ambiguity is
built in: some words are a person in one sentence and a place in another ("Jordan", "Florence", "Sydney",
"Georgia", "Washington"), an organisation or a place ("Amazon"), a person or a filler word ("May" and "June" are
also months), and "Turkey"/"Turkish" or "Japan"/"Japanese" are a LOC and a MISC. Words keep their case (capitals
are evidence, but every sentence starts with one). The word vocabulary (``<pad>`` 0, ``<unk>`` 1, then the words)
is built on the training split, whose entity names come from the first three quarters of each list only
(``SEEN_FRACTION``): a quarter of the names in validation and test never occur in training, become ``<unk>`` and
must be recognised from their context. Sentences have 4 to about 20 words; a batch is padded to its longest
sentence with ``<pad>`` and label -100.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from rnnlab.data.datamodules import PAD, _Loaders
from rnnlab.data.vocab import CharVocab
from rnnlab.errors import DataError

SPLITS = ("train", "val", "test")
IGNORE = -100  # the label of steps nothing is predicted at (torch's cross_entropy ignore_index)
UNK = "<unk>"


def split_rngs(*key: int) -> dict[str, np.random.Generator]:
    """One independent generator per split, derived from ``key`` (the generator seed and the shape arguments)."""
    streams = np.random.SeedSequence(list(key)).spawn(len(SPLITS))
    return {split: np.random.default_rng(stream) for split, stream in zip(SPLITS, streams, strict=True)}


def _sizes(data_cfg: Any) -> dict[str, int]:
    sizes = {"train": int(data_cfg.num_train), "val": int(data_cfg.num_val), "test": int(data_cfg.num_test)}
    for split, n in sizes.items():
        if n < 1:
            raise DataError(f"data.num_{split} must be >= 1 for data={data_cfg.name}, got {n}")
    return sizes


# ------------------------------------------------------------------------------------------ adding problem
def adding_problem(num: int, length: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """``num`` sequences: x [num, length, 2] float32 (value, marker), y [num, 1] float32 (sum of marked values)."""
    if length < 2:
        raise ValueError(f"the adding problem needs length >= 2, got {length}")
    values = rng.random((num, length))
    half = length // 2
    first = rng.integers(0, half, size=num)
    second = rng.integers(half, length, size=num)
    markers = np.zeros((num, length))
    rows = np.arange(num)
    markers[rows, first] = 1.0
    markers[rows, second] = 1.0
    x = np.stack([values, markers], axis=-1).astype(np.float32)
    y = (values[rows, first] + values[rows, second])[:, None].astype(np.float32)
    return x, y


class FloatSequences(Dataset):
    """Fixed-length float sequences and float targets; ``collate`` gathers a batch with one index operation."""

    def __init__(self, x: np.ndarray, y: np.ndarray):
        self.x = torch.from_numpy(x)
        self.y = torch.from_numpy(y)

    def __len__(self) -> int:
        return len(self.y)

    def __getitem__(self, i: int) -> int:
        return i

    def collate(self, indices: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
        idx = torch.as_tensor(indices)
        return self.x[idx], self.y[idx]


class AddingDataModule(_Loaders):
    """data=adding: (x [B, length, 2], y [B, 1]) batches; ``baseline_mse`` per split (the MSE of predicting the
    training targets' mean, about 1/6)."""

    input_features = 2

    def __init__(
        self,
        length: int,
        num_train: int,
        num_val: int,
        num_test: int,
        generator_seed: int,
        batch_size: int,
        num_workers: int = 0,
        pin_memory: bool = False,
        seed: int = 0,
    ):
        super().__init__(batch_size, num_workers, pin_memory, seed)
        self.length = length
        self.sizes = {"train": num_train, "val": num_val, "test": num_test}
        self.generator_seed = generator_seed
        self.vocab = CharVocab([])  # float inputs: no symbols
        self.num_outputs = 1
        self.baseline_mse: dict[str, float] = {}

    def setup(self, stage: str | None = None) -> None:
        if self.splits:
            return
        rngs = split_rngs(self.generator_seed, self.length)
        data = {split: adding_problem(self.sizes[split], self.length, rngs[split]) for split in SPLITS}
        mean = float(data["train"][1].mean(dtype=np.float64))
        self.baseline_mse = {s: float(np.mean((y.astype(np.float64) - mean) ** 2)) for s, (_, y) in data.items()}
        self.splits = {s: FloatSequences(x, y) for s, (x, y) in data.items()}


def build_adding(data_cfg: Any, seed: int, cache_dir: str | None, **common: Any) -> AddingDataModule:
    if data_cfg.length < 2:
        raise DataError(f"data.length must be >= 2 for data=adding (two marked steps), got {data_cfg.length}")
    sizes = _sizes(data_cfg)
    return AddingDataModule(data_cfg.length, sizes["train"], sizes["val"], sizes["test"], data_cfg.generator_seed,
                            seed=seed, **common)  # fmt: skip


# -------------------------------------------------------------------------------------- token-label batches
class TaggedSequences(Dataset):
    """Padded token ids, lengths and per-token labels; ``collate`` trims a batch to its longest sequence, so
    each batch is padded to its own length (label -100 and ``<pad>`` past each sequence's end)."""

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


# ------------------------------------------------------------------------------------------------ copy task
def copy_task(num: int, copy_length: int, length: int, num_symbols: int, rng: np.random.Generator
              ) -> tuple[np.ndarray, np.ndarray]:  # fmt: skip
    """ids and labels [num, 2 K + length + 1] int64 (layout in the module docstring): K symbols in 1..num_symbols,
    ``length`` blanks (0), the delimiter num_symbols + 1, K blanks; labels are the symbols at the last K steps
    and -100 elsewhere."""
    if copy_length < 1 or length < 1 or num_symbols < 1:
        raise ValueError(
            f"copy_task needs copy_length, length, num_symbols >= 1, got {copy_length, length, num_symbols}"
        )
    k = copy_length
    symbols = rng.integers(1, num_symbols + 1, size=(num, k))
    ids = np.zeros((num, 2 * k + length + 1), dtype=np.int64)
    ids[:, :k] = symbols
    ids[:, k + length] = num_symbols + 1
    labels = np.full(ids.shape, IGNORE, dtype=np.int64)
    labels[:, k + length + 1 :] = symbols
    return ids, labels


class CopyDataModule(_Loaders):
    """data=copy: (ids [B, 2K + L + 1], lengths [B] (all equal), labels) batches; vocabulary ``<blank>``,
    ``s1`` .. ``sN``, ``<go>``; the network predicts one of those N + 2 tokens at every step."""

    def __init__(self, copy_length: int, length: int, num_symbols: int, sizes: dict[str, int], generator_seed: int,
                 batch_size: int, num_workers: int = 0, pin_memory: bool = False, seed: int = 0):  # fmt: skip
        super().__init__(batch_size, num_workers, pin_memory, seed)
        self.copy_length, self.length, self.num_symbols = copy_length, length, num_symbols
        self.sizes, self.generator_seed = sizes, generator_seed
        self.vocab = CharVocab(["<blank>", *(f"s{i}" for i in range(1, num_symbols + 1)), "<go>"])
        self.num_outputs = len(self.vocab)
        self.label_names = self.vocab.itos

    def predict_info(self) -> dict[str, Any]:
        """How rnnlab-predict reads new text for this data (saved with the checkpoint): tokens separated by
        whitespace (``s1 s2 <blank> <go> ...``), none unknown."""
        return {"tokenizer": "words", "unknown": None, "labels": list(self.label_names)}

    def setup(self, stage: str | None = None) -> None:
        if self.splits:
            return
        rngs = split_rngs(self.generator_seed, self.copy_length, self.length, self.num_symbols)
        for split in SPLITS:
            ids, labels = copy_task(self.sizes[split], self.copy_length, self.length, self.num_symbols, rngs[split])
            self.splits[split] = TaggedSequences(ids, np.full(len(ids), ids.shape[1], dtype=np.int64), labels)


def build_copy(data_cfg: Any, seed: int, cache_dir: str | None, **common: Any) -> CopyDataModule:
    k, length, n = data_cfg.copy_length, data_cfg.length, data_cfg.num_symbols
    if length < 1 or k < 1:
        raise DataError(f"data.length and data.copy_length must be >= 1 for data=copy, got {length} and {k}")
    if k > length:
        raise DataError(f"data.copy_length ({k}) must be <= data.length ({length}) for data=copy")
    if n < 2:
        raise DataError(f"data.num_symbols must be >= 2 for data=copy, got {n}")
    return CopyDataModule(k, length, n, _sizes(data_cfg), data_cfg.generator_seed, seed=seed, **common)


# ------------------------------------------------------------------------------------------- named entities
# The lists are ordered so that the ambiguous entries ("Jordan", "Florence", "Amazon", "May", ...) fall in the
# first three quarters: the training split sees them in both roles. (Word lists read best as words: SIM905.)
FIRST = """Jordan Florence Sydney Georgia May June Paris Austin Victoria Chad Grace Will Mark Rose Bill Hope
John Mary Ahmed Li Sofia Pierre Anna Carlos Yuki Olga David Fatima Ivan Amara Lucas Priya Mohammed Elena Kwame
Ingrid Mateo Aisha Hiroshi Chloe Dmitri Nadia Omar Lena Rafael Mei Tomasz Zainab Pablo Astrid Kofi Sara Jamal
Helena Arjun Beatriz Sven Layla Diego Noor Emeka Hana Viktor Camille Ravi Ines Jonas Leila Marco Wanjiru Felix
Daniel Chiara Oskar""".split()  # noqa: SIM905
LAST = """Washington Lincoln London Chen Smith Garcia Müller Rossi Okafor Tanaka Novak Dubois Kowalski Silva
Khan Lee Johnson Ivanova Haddad Nakamura Brown Costa Mensah Andersson Petrov Moreau Yilmaz Nguyen Fernandes
Schmidt Kim Bianchi Popescu Adeyemi Larsen Santos Hoffmann Sato Kovacs Walker Mendoza Rahman Wright Ortiz Baker
Jensen Horvat Abubakar Lindqvist Park Romano Dlamini Murphy Weber Kaur Eriksen Novak-Hill""".split()  # noqa: SIM905
LAST += ["van Dijk", "de Souza", "Al Hassan", "de la Cruz", "van der Berg", "O'Neill", "Ben Ali", "da Silva"]
TITLES = ["Dr.", "President", "Minister", "Mr.", "Ms.", "Professor", "coach", "Judge", "Senator", "Captain"]
ORG = ["Amazon", "Apple", "Orange", "Shell", "Jaguar", "United Nations", "Red Cross", "Siemens", "Toyota",
       "World Bank", "Oxford University", "General Electric", "Reuters", "FIFA", "Deutsche Bank", "Nokia",
       "Greenpeace", "Bank of Japan", "European Commission", "BBC", "Acme Corp", "Microsoft", "Samsung", "Nestle",
       "Airbus", "Boeing", "Interpol", "UNESCO", "NATO", "Volkswagen", "Philips", "Unilever", "Real Madrid",
       "Manchester United", "Ajax", "Juventus", "New York Times", "Al Jazeera", "Le Monde", "Associated Press",
       "University of Lagos", "Harvard University", "Sorbonne", "MIT", "Red Crescent", "Doctors Without Borders",
       "Amnesty International", "World Health Organization", "International Monetary Fund", "Bank of England",
       "Federal Reserve", "African Union", "Ministry of Finance", "Supreme Court", "Ford", "Honda", "IKEA",
       "Barclays", "HSBC", "Petrobras", "Tata Group", "Alibaba", "Sony", "Lufthansa", "Air France",
       "Emirates", "Gazprom", "Safaricom", "Vodafone", "Pfizer", "Bayer", "Nintendo"]  # fmt: skip
LOC = ["Jordan", "Florence", "Sydney", "Georgia", "Washington", "Paris", "Austin", "Victoria", "Chad", "Lincoln",
       "London", "the Amazon", "Turkey", "Japan", "New York", "Tokyo", "Lagos", "Berlin", "São Paulo", "Cairo",
       "Mumbai", "Lake Victoria", "the Alps", "Buenos Aires", "Kenya", "Canada", "Hong Kong", "Madrid",
       "Rio de Janeiro", "Los Angeles", "New Delhi", "Cape Town", "Nairobi", "Istanbul", "Seoul", "Moscow",
       "Beijing", "Lima", "Bogota", "Mexico City", "Oslo", "Stockholm", "Warsaw", "Prague", "Vienna", "Rome",
       "Athens", "Lisbon", "Dublin", "Edinburgh", "Manila", "Jakarta", "Hanoi", "Bangkok", "Karachi", "Dhaka",
       "Accra", "Addis Ababa", "Kinshasa", "Casablanca", "Tunis", "Santiago", "Montreal", "Vancouver", "Chicago",
       "the Sahara", "the Nile", "the Andes", "Mount Kenya", "the Pacific", "Silicon Valley", "Brazil", "Nigeria",
       "Germany", "France", "India", "Australia", "Egypt", "Peru", "Norway", "South Africa", "New Zealand",
       "United States", "Saudi Arabia", "Sri Lanka", "Costa Rica"]  # fmt: skip
MISC_SLOTS = {  # the MISC entities by role, so that a template asks for one that fits; all are tagged MISC
    "NAT": [
        "Turkish",
        "Japanese",
        "French",
        "Brazilian",
        "German",
        "Italian",
        "Kenyan",
        "Nigerian",
        "Chinese",
        "Indian",
        "Mexican",
        "Canadian",
        "Swedish",
        "Polish",
        "Egyptian",
        "Korean",
        "Spanish",
        "Dutch",
        "Australian",
        "South African",
        "English",
    ],
    "EVENT": [
        "Olympic Games",
        "World Cup",
        "Tour de France",
        "Champions League",
        "Super Bowl",
        "Wimbledon",
        "Africa Cup of Nations",
        "Venice Biennale",
        "Cannes Film Festival",
        "Paralympics",
        "Davis Cup",
        "Ryder Cup",
        "Eurovision",
        "Commonwealth Games",
        "Grand Prix",
    ],
    "PRIZE": ["Nobel Prize", "Oscar", "Grammy", "Booker Prize", "Fields Medal", "Pulitzer Prize", "Ballon d'Or"],
    "HOLIDAY": ["Christmas", "Ramadan", "Diwali", "Easter", "Hanukkah", "Lunar New Year", "Eid", "Thanksgiving"],
    "LANG": ["Mandarin", "Swahili", "Arabic", "English", "Portuguese", "Hindi", "Yoruba", "Spanish", "Japanese"],
    "PRODUCT": ["iPhone", "Windows", "Boeing 747", "PlayStation", "Euro", "Walkman"],
}
MISC = [name for names in MISC_SLOTS.values() for name in names]
FILLERS = {
    "DAY": "Monday Tuesday Wednesday Thursday Friday Saturday Sunday".split(),  # noqa: SIM905
    "MONTH": "January February March April May June July August September October November December".split(),  # noqa
    "NUM": "two three five ten 12 20 40 100 250 1,000 3.5 eight".split(),  # noqa: SIM905
    "SAY": ["said", "told reporters", "announced", "confirmed", "denied", "wrote"],
    "TIME": ["last week", "on Monday", "this year", "in 2019", "yesterday", "last month", "in the morning"],
}
TEMPLATES = [
    "{PER} works for {ORG} in {LOC} .",
    "{PER} met {PER} at the {EVENT} .",
    "The {ORG} office in {LOC} opened on {DAY} .",
    "{ORG} signed a deal with {ORG} , {PER} {SAY} .",
    "{PER} flew from {LOC} to {LOC} {TIME} .",
    "A {NAT} team won the {EVENT} in {LOC} .",
    "According to {ORG} , prices in {LOC} rose by {NUM} percent .",
    "{PER} , a {NAT} engineer , joined {ORG} in {MONTH} .",
    "Fans in {LOC} celebrated the {EVENT} all night .",
    "{PER} will visit {LOC} before {HOLIDAY} .",
    "{ORG} {SAY} it would cut {NUM} jobs in {LOC} .",
    "Shares of {ORG} fell {NUM} percent on {DAY} .",
    "{PER} {SAY} on {DAY} that {ORG} had agreed .",
    "In {MONTH} , {PER} moved to {LOC} .",
    "The {NAT} film by {PER} opened in {LOC} .",
    "{LOC} beat {LOC} {NUM} to one in the {EVENT} .",
    "{PER} was born in {LOC} in {MONTH} .",
    "Police in {LOC} arrested {NUM} people {TIME} .",
    "{ORG} and {ORG} will merge , {PER} {SAY} .",
    "{PER} of {ORG} spoke at the {EVENT} in {LOC} .",
    "Thousands marched through {LOC} on {DAY} .",
    "{PER} won the {PRIZE} for the second time .",
    "A report by {ORG} {SAY} {LOC} needs {NUM} new schools .",
    "{PER} speaks {LANG} and {LANG} .",
    "{ORG} opened a factory near {LOC} {TIME} .",
    "Heavy rain hit {LOC} and {LOC} {TIME} .",
    "{PER} thanked {PER} after the {EVENT} .",
    "The {NAT} delegation arrived in {LOC} on {DAY} .",
    "{PER} , who studied at {ORG} , now lives in {LOC} .",
    "Tourists from {LOC} flocked to {LOC} during {HOLIDAY} .",
    "{PER} bought a new {PRODUCT} in {LOC} {TIME} .",
    "{ORG} will stop selling the {PRODUCT} , {PER} {SAY} .",
]
PLAIN = [
    "The weather was cold and the trains were late .",
    "Prices rose again this year , analysts {SAY} .",
    "She {SAY} the plan would be ready next week .",
    "Nobody expected the meeting to last so long .",
    "The new bridge will open in {MONTH} .",
    "Sales fell sharply after the holiday season .",
    "On {DAY} , {NUM} flights were cancelled because of fog .",
    "The committee will meet again in {MONTH} .",
    "Many families hope the bill will pass {TIME} .",
    "May was the warmest month since records began .",
    "Officials {SAY} that {NUM} houses were damaged .",
    "Turkey and rice were served at the dinner .",
    "Will the talks resume on {DAY} ?",
    "Grace under pressure is rare , the coach {SAY} .",
]
TYPES = ("PER", "ORG", "LOC", "MISC")
LABELS = ["O", *(f"{p}-{t}" for t in TYPES for p in ("B", "I"))]
SEEN_FRACTION = 0.75  # the training split draws entity names from the first 75 % of each list only
ENTITY_FRACTION = 0.8  # the other sentences have no entity


def _pick(rng: np.random.Generator, items: list[str]) -> str:
    return items[int(rng.integers(len(items)))]


def _pool(names: list[str], seen_only: bool) -> list[str]:
    return names[: int(len(names) * SEEN_FRACTION)] if seen_only else names


def _person(rng: np.random.Generator, seen_only: bool) -> tuple[list[str], list[str]]:
    """(words before the name (a title, tagged O), the name's words) by the {PER} rule of the grammar."""
    first, last = _pick(rng, _pool(FIRST, seen_only)), _pick(rng, _pool(LAST, seen_only)).split()
    u = rng.random()
    if u < 0.45:
        return [], [first, *last]
    if u < 0.6:
        return [], [first]
    if u < 0.75:
        return [_pick(rng, TITLES)], last
    if u < 0.85:
        return [_pick(rng, TITLES)], [first, *last]
    return [], [first, f"{chr(ord('A') + int(rng.integers(26)))}.", *last]


def ner_sentence(rng: np.random.Generator, seen_only: bool = False) -> tuple[list[str], list[str]]:
    """One sentence (its words) and its BIO tags, by the grammar in the module docstring. With ``seen_only``
    (the training split) entity names come from the first ``SEEN_FRACTION`` of each list."""
    entity = rng.random() < ENTITY_FRACTION
    template = _pick(rng, TEMPLATES if entity else PLAIN)
    tokens: list[str] = []
    tags: list[str] = []
    for piece in template.split():
        slot = piece[1:-1] if piece.startswith("{") and piece.endswith("}") else None
        if slot is None:
            tokens.append(piece)
            tags.append("O")
        elif slot in FILLERS:
            words = _pick(rng, FILLERS[slot]).split()
            tokens += words
            tags += ["O"] * len(words)
        else:
            kind = "MISC" if slot in MISC_SLOTS else slot
            if slot == "PER":
                before, name = _person(rng, seen_only)
            else:
                pool = _pool(MISC_SLOTS[slot] if slot in MISC_SLOTS else {"ORG": ORG, "LOC": LOC}[slot], seen_only)
                before, name = [], _pick(rng, pool).split()
                if name[0] == "the":  # "the Alps": the article is not part of the entity
                    before, name = ["the"], name[1:]
            tokens += [*before, *name]
            tags += ["O"] * len(before) + [f"B-{kind}"] + [f"I-{kind}"] * (len(name) - 1)
    if tokens[0][0].islower():  # "the Alps ..." or "coach Smith ..." at the start of a sentence
        tokens[0] = tokens[0][0].upper() + tokens[0][1:]
    return tokens, tags


class NerSynthDataModule(_Loaders):
    """data=ner_synth: (ids [B, T], lengths [B], labels [B, T]) batches, T the batch's longest sentence."""

    def __init__(self, sizes: dict[str, int], generator_seed: int, batch_size: int, num_workers: int = 0,
                 pin_memory: bool = False, seed: int = 0):  # fmt: skip
        super().__init__(batch_size, num_workers, pin_memory, seed)
        self.sizes, self.generator_seed = sizes, generator_seed
        self.pad_id = 0
        self.label_names = LABELS
        self.num_outputs = len(LABELS)
        self.vocab = CharVocab([PAD, UNK])  # the words are added by setup (from the training split)

    def predict_info(self) -> dict[str, Any]:
        """How rnnlab-predict reads new text for this data (saved with the checkpoint): words separated by
        whitespace, case kept (punctuation is a word of its own: "Paris ."), unknown words as ``<unk>``."""
        return {"tokenizer": "words", "unknown": UNK, "labels": list(self.label_names)}

    def setup(self, stage: str | None = None) -> None:
        if self.splits:
            return
        rngs = split_rngs(self.generator_seed, len(LABELS))
        data = {s: [ner_sentence(rngs[s], seen_only=s == "train") for _ in range(self.sizes[s])] for s in SPLITS}
        self.vocab = CharVocab([PAD, UNK, *sorted({tok for tokens, _ in data["train"] for tok in tokens})])
        label_id = {name: i for i, name in enumerate(LABELS)}
        unk = self.vocab.stoi[UNK]
        for split, sentences in data.items():
            n, t = len(sentences), max(len(tokens) for tokens, _ in sentences)
            ids = np.full((n, t), self.pad_id, dtype=np.int64)
            labels = np.full((n, t), IGNORE, dtype=np.int64)
            lengths = np.array([len(tokens) for tokens, _ in sentences], dtype=np.int64)
            for i, (tokens, tags) in enumerate(sentences):
                ids[i, : len(tokens)] = [self.vocab.stoi.get(tok, unk) for tok in tokens]
                labels[i, : len(tags)] = [label_id[tag] for tag in tags]
            self.splits[split] = TaggedSequences(ids, lengths, labels)


def build_ner_synth(data_cfg: Any, seed: int, cache_dir: str | None, **common: Any) -> NerSynthDataModule:
    return NerSynthDataModule(_sizes(data_cfg), data_cfg.generator_seed, seed=seed, **common)
