"""Polyphonic music as piano rolls: data=jsb_chorales, the Bach chorales (for task=polyphonic).

A piano roll has one 88-dimensional binary vector per time step, key k being MIDI note 21 + k (A0 .. C8); a
chorale of n steps gives the inputs x = roll[:n-1] and the targets y = roll[1:n] (predict step t + 1 from the steps
up to t). Batches are (x [B, T, 88] float32, lengths [B] = n - 1, y [B, T, 88] float32), zero past each length,
T the longest length of the batch.

**Sources.** By default the chorales of the music21 corpus shipped in the PyPI package ``music21`` (read
offline, parsed once into the cache, below); ``data.path=FILE`` reads the standard split instead (the JSON or
pickle distributed with Boulanger-Lewandowski, Vincent & Bengio, ICML 2012: ``{"train"|"valid"|"test": [chorale,
...]}``, each chorale a list of time steps, each step a list of the MIDI numbers sounding, possibly empty), used
as it is: its train / valid / test become train / val / test, no key below applies to it.

**Which files are chorales.** ``music21.corpus.getComposer('bach')`` lists 433 files (music21 10.5.1); taken in
a fixed order (files without a ``-variant`` suffix first, then by the numbers of the name), 388 are kept and 45
skipped:

* 20 ``.rntxt`` files: Roman-numeral analyses (Riemenschneider 1-20), not scores;
* 3 ``.krn`` files (bwv277, bwv281, bwv366): Humdrum copies of chorales the corpus also holds as MusicXML;
* 3 scores without exactly one part named Soprano, Alto, Tenor and Bass (a name may go on, as in "Soprano Oboe 1
  Violin1"), not four-part settings: bwv846 (a keyboard prelude), bwv227.3 and bwv27.6 (five voices, two
  soprano parts). Instrumental parts beside the four voices (horns, violins, continuo of cantata settings)
  are dropped and the voices kept;
* 7 settings whose four voices rest together for more than 4 quarter notes: instrumental interludes, which would
  be long silences (bwv41.6, bwv79.3, bwv171.6, bwv248.9-1, bwv248.23-2, bwv248.42-4, bwv248.64-6);
* 12 duplicates: a chorale whose steps, with the repeats expanded or as written, are those of one kept before it
  up to a transposition and at most 10 % of the steps. The corpus holds some settings twice (bwv18.5-lz / -w,
  bwv112.5 / -sc, bwv190.7 / -inst, bwv248.35-3 / -3c, bwv398 / bwv197.7-a, bwv62.6 / bwv274, bwv158.4 /
  bwv279, bwv253 / bwv414), and Bach reused some (bwv20.7 = bwv20.11, bwv227.1 = bwv227.11, bwv59.3 /
  bwv175.7 with 5 of 113 steps differing, bwv244.15 / bwv244.17 a semitone apart with 4 of 65); the first is
  kept. The closest two chorales kept (bwv12.7 / bwv69.6-a) differ in 19 % of their steps.

The same chorales are kept whatever ``data.expand_repeats``. ``data.max_chorales=N`` keeps the first N of that
order (and parses only as many files as that needs). What was skipped, and why, is recorded in the cache file
(``skipped``).

**Preparation**, after Boulanger-Lewandowski et al. (2012), who used the chorales and the split of Allan &
Williams (2005). Each point was checked against the standard file (``jsb-chorales-quarter.json``, 382
chorales), of which 279 were found among these 388 (at most 10 % of their steps differing, the repeats expanded
or as written; the numbers are in docs/tasks-and-data.md):

* One step per quarter note, from the first note (a pickup is not padded to a full bar): step t holds the notes
  of the four voices sounding at the onset of quarter t, i.e. with offset <= t < offset + duration. Shorter notes
  that start between two beats (passing eighths) are not seen; a note held or tied across a beat is sounding at
  it, so held, tied and re-struck notes look alike (as in the standard file). Grace notes (no duration) never
  sound. A voice doubling another's pitch gives one key: a step has at most 4 keys on.
* A rest of all four voices (a breath after a fermata) is an empty step. The standard file is not consistent:
  of the 62 such steps in the chorales found, it has 32 empty and holds the previous chord at 30.
* The final bar is completed: when the last measure is shorter than its time signature's bar (it completes the
  pickup), the final chord is held to the end of the full bar, as in the standard file (the lengths agree for
  274 of the 279 chorales found; 183 of the 186 whose bar is completed).
* Repeats are written out (music21's ``expandRepeats``; ``data.expand_repeats=false`` keeps them as written). The
  standard file is not consistent: of the 123 chorales found whose repeats change their length, 78 match the
  expanded reading better and 45 the written one.
* Fermatas do not lengthen a note (the standard file has none either).
* Transposition (``data.transpose=c``, default): each chorale is moved to C major or C minor, by -6 .. +5
  semitones, as the standard file is (contrary to what was assumed when this module was written: every chorale
  found there is a transposition of its music21 setting, and 356 of its 382 chorales end on a C in the bass).
  The tonic is the last bass note when it is the tonic of the key signature's major key or of its relative
  minor (314 chorales), otherwise music21's key analysis of the written score (Krumhansl-Schmuckler,
  ``Score.analyze('key')``, 74 chorales, mostly modal settings). The transposition is the standard file's for
  270 of the 279 chorales found (the other 9 are modal, read either way). ``data.transpose=none`` keeps the
  written keys.
* Register (``data.octave_shift=1``, default): the standard file lies one octave above the written pitch (its
  notes span MIDI 43 .. 96, a soprano up to C7), so every note is raised by 12 semitones after the transposition
  (the rolls then span 43 .. 96 too), and a chorale found there has the same keys here. This only renames the
  88 outputs for a model; ``data.octave_shift=0`` keeps the written register (for listening: ``write_midi``).

**Differences from the standard preparation** that remain: the source (music21's MusicXML editions, not the
MIDI files behind the standard file: a harmonisation may differ in a note or two, and 103 of the standard file's
chorales were not found within 10 % while the corpus has settings the standard file lacks); the set of chorales
(the skips above); the split (a seeded split of these chorales with the standard proportions 229 / 76 / 77 of
382: ``data.generator_seed``, ``data.val_fraction``, ``data.test_fraction``; ``data.path`` gives the standard
split itself); all-voice rests, repeats and the key of a modal chorale, where the standard file is not
consistent.

**Cache.** Parsing the corpus takes about two minutes of CPU (130 s on a busy 2-core machine), so the parsed
chorales (written pitches, the tonic, the skipped files and why) are kept in the cache directory as
``jsb-chorales-music21<version>-c<CONVERTER_VERSION>-<key>.json``, keyed by music21's version,
:data:`CONVERTER_VERSION` and the keys that change the parse (``data.max_chorales``, ``data.expand_repeats``),
written atomically; later runs read it (transposition, register and split are applied after reading). music21 is
imported only when the corpus is parsed; nothing is downloaded.

**Splits.** A permutation drawn from ``data.generator_seed`` (its own seed: every run and both backends see the
same split) gives round(N * test_fraction) chorales to test, round(N * val_fraction) to validation, the rest
to training.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import logging
import math
import os
import pickle
import re
import warnings
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch

from rnnlab.atomic import atomic_file, write_text
from rnnlab.data.corpus import cache_root, existing_file
from rnnlab.data.datamodules import _Loaders
from rnnlab.data.sequences import TaggedSequences
from rnnlab.data.vocab import CharVocab
from rnnlab.errors import DataError

log = logging.getLogger(__name__)

LOWEST, HIGHEST = 21, 108  # MIDI numbers of the 88 keys: A0 .. C8
KEYS = HIGHEST - LOWEST + 1
CONVERTER_VERSION = 1  # bump when the music21 -> steps conversion changes; the cache key includes it
SPLITS = ("train", "val", "test")
FILE_SPLITS = {"train": "train", "valid": "val", "test": "test"}  # the standard file's names -> ours
STANDARD_SIZES = {"train": 229, "val": 76, "test": 77}  # Allan & Williams' split of 382 chorales
VOICES = ("soprano", "alto", "tenor", "bass")
MAX_SILENT_QUARTERS = 4  # longer rests of all four voices together: instrumental interludes
DUPLICATE_FRACTION = 0.1  # at most this fraction of steps differing (after transposition): a duplicate
SCORE_SUFFIXES = (".mxl", ".xml", ".musicxml")
TRANSPOSE = ("c", "none")

_VOICE = re.compile(r"^\s*(soprano|alto|tenor|bass)\b", re.IGNORECASE)
_NAMES = ("C", "C#", "D", "D#", "E", "F", "F#", "G", "G#", "A", "A#", "B")
_EPS = 1e-6


# ------------------------------------------------------------------------------------------- piano rolls
def key_names() -> list[str]:
    """The 88 keys' names, "A0" .. "C8" (sharps: "C#4"; middle C is "C4", MIDI 60)."""
    return [f"{_NAMES[m % 12]}{m // 12 - 1}" for m in range(LOWEST, HIGHEST + 1)]


def roll_from_midi_lists(steps: Iterable[Iterable[int]], dtype: Any = np.float32) -> np.ndarray:
    """A piano roll [T, 88] (0 / 1 of ``dtype``) from T lists of sounding MIDI numbers (21..108; a list may be
    empty). ValueError names a number outside the keyboard."""
    rows = [list(step) for step in steps]
    roll = np.zeros((len(rows), KEYS), dtype=dtype)
    for t, notes in enumerate(rows):
        for m in notes:
            if not LOWEST <= int(m) <= HIGHEST or int(m) != m:
                raise ValueError(f"step {t}: MIDI number {m} is not a key of the piano ({LOWEST}..{HIGHEST})")
            roll[t, int(m) - LOWEST] = 1
    return roll


def _binary(roll: Any) -> np.ndarray:
    """``roll`` as a bool array [T, 88]; ValueError unless it is 2-D, 88 wide and holds only 0 and 1."""
    arr = roll.detach().cpu().numpy() if isinstance(roll, torch.Tensor) else np.asarray(roll)
    if arr.ndim != 2 or arr.shape[1] != KEYS:
        raise ValueError(f"a piano roll is [steps, {KEYS}], got shape {tuple(arr.shape)}")
    if arr.dtype != bool:
        bad = arr[(arr != 0) & (arr != 1)]
        if bad.size:
            raise ValueError(f"a piano roll holds 0 and 1 only, found {bad.flat[0]!r} (threshold or sample first)")
    return arr.astype(bool)


def midi_lists_from_roll(roll: Any) -> list[list[int]]:
    """The inverse of :func:`roll_from_midi_lists`: per step, the ascending MIDI numbers of the keys that are on.
    ``roll`` is [T, 88] of 0 and 1 (NumPy or torch; bool, int or float)."""
    on = _binary(roll)
    return [[int(k) + LOWEST for k in np.flatnonzero(row)] for row in on]


def write_midi(
    roll: Any,
    path: str | os.PathLike[str],
    tempo_bpm: float = 80.0,
    *,
    ticks_per_beat: int = 480,
    velocity: int = 80,
    program: int = 0,
    hold: str = "merge",
) -> Path:
    """Write a piano roll [T, 88] as a standard MIDI file (type 1, one track, channel 0), one quarter note per
    step at ``tempo_bpm``; written atomically (:func:`rnnlab.atomic.atomic_file`). Returns the path.

    ``hold="merge"`` (default): a key on at consecutive steps is one note lasting all of them (a held half note
    sounds as one; the roll cannot tell it from two repeated quarters, which are merged too); ``hold="restrike"``:
    one quarter note per step (repeated quarters sound right, held notes are struck again at every beat). Either
    way reading the file back at one step per quarter note gives the same roll. The file lasts T quarter notes
    (trailing empty steps included). ``program`` is the General MIDI instrument (0 = acoustic grand piano, 19 =
    church organ)."""
    import mido

    on = _binary(roll)
    if hold not in ("merge", "restrike"):
        raise ValueError(f"hold must be merge or restrike, got {hold!r}")
    if not (tempo_bpm > 0 and math.isfinite(tempo_bpm)):
        raise ValueError(f"tempo_bpm must be > 0, got {tempo_bpm}")
    events: list[tuple[int, int, int]] = []  # (tick, 0 = off / 1 = on, note): offs first at a shared tick
    for k in range(KEYS):
        steps = np.flatnonzero(on[:, k])
        if not steps.size:
            continue
        if hold == "merge":  # runs of consecutive steps
            cuts = np.flatnonzero(np.diff(steps) > 1) + 1
            runs = [(int(run[0]), int(run[-1]) + 1) for run in np.split(steps, cuts)]
        else:
            runs = [(int(t), int(t) + 1) for t in steps]
        for start, stop in runs:
            events += [(start * ticks_per_beat, 1, LOWEST + k), (stop * ticks_per_beat, 0, LOWEST + k)]
    events.sort()
    track = mido.MidiTrack()
    track.append(mido.MetaMessage("set_tempo", tempo=mido.bpm2tempo(tempo_bpm), time=0))
    track.append(mido.Message("program_change", program=program, channel=0, time=0))
    now = 0
    for tick, kind, note in events:
        message = "note_on" if kind else "note_off"
        track.append(mido.Message(message, note=note, velocity=velocity if kind else 0, channel=0, time=tick - now))
        now = tick
    track.append(mido.MetaMessage("end_of_track", time=len(on) * ticks_per_beat - now))
    midi = mido.MidiFile(type=1, ticks_per_beat=ticks_per_beat)
    midi.tracks.append(track)
    target = Path(path)
    with atomic_file(target, "wb") as fh:
        midi.save(file=fh)
    return target


# ------------------------------------------------------------------------------------- the music21 corpus
def corpus_order(path: Path) -> tuple[Any, ...]:
    """Sort key of a corpus file: files without a variant suffix ("-lz", "-inst", "-a", ...) first, then by
    the numbers in the name (bwv1.6 < bwv10.7 < bwv248.5), then by name."""
    return ("-" in path.stem, tuple(int(n) for n in re.findall(r"\d+", path.stem)), path.name)


def corpus_files() -> list[Path]:
    """The Bach files of music21's corpus (433 in music21 10.5.1), in :func:`corpus_order`."""
    from music21 import corpus

    return sorted((Path(p) for p in corpus.getComposer("bach")), key=corpus_order)


def _vocal_parts(score: Any) -> list[Any] | str:
    """The Soprano, Alto, Tenor and Bass parts, or why the score is not a four-part setting."""
    found: dict[str, list[Any]] = {v: [] for v in VOICES}
    for part in score.parts:
        match = _VOICE.match(part.partName or "")
        if match:
            found[match.group(1).lower()].append(part)
    if all(len(found[v]) == 1 for v in VOICES):
        return [found[v][0] for v in VOICES]
    names = ", ".join(repr(p.partName) for p in score.parts)
    return f"not a four-part setting: parts {names}"


def _final_bar_completion(part: Any) -> float:
    """Quarter notes missing from the last measure of ``part`` to fill its time signature's bar (0 if full)."""
    from music21 import stream

    measures = part.getElementsByClass(stream.Measure)
    if not len(measures):
        return 0.0
    last = measures[-1]
    try:
        missing = float(last.barDuration.quarterLength) - float(last.duration.quarterLength)
    except Exception:  # no time signature in context: nothing to complete
        return 0.0
    return max(missing, 0.0)


def _tonic(score: Any, parts: list[Any]) -> tuple[int, str]:
    """(pitch class of the tonic, how it was found): the last bass note when it is the tonic of the key
    signature's major key or of its relative minor, otherwise music21's key analysis."""
    from music21 import key

    bass_notes = list(parts[3].flatten().notes)
    signatures = list(parts[0].recurse().getElementsByClass(key.KeySignature))
    if bass_notes and signatures:
        last = bass_notes[-1].pitches[0].pitchClass
        major = (7 * signatures[0].sharps) % 12
        if last in (major, (major + 9) % 12):
            return last, "final bass"
    return int(score.analyze("key").tonic.pitchClass), "key analysis"


def quarter_steps(parts: Sequence[Any]) -> tuple[list[list[int]], float, float]:
    """(steps, quarters, completion) of the four voices: per quarter note from the first note, the MIDI numbers
    sounding at its onset (offset <= t < offset + duration; grace notes never sound); quarters is music21's
    highestTime, completion the quarter notes added to complete the final bar (the final chord holds through
    them)."""
    notes = [(float(n.offset), float(n.quarterLength), [p.midi for p in n.pitches])
             for part in parts for n in part.flatten().notes if n.quarterLength > 0]  # fmt: skip
    quarters = max((float(part.highestTime) for part in parts), default=0.0)
    completion = _final_bar_completion(parts[0])
    total = quarters + completion
    steps: list[set[int]] = [set() for _ in range(math.ceil(total - _EPS))]
    for offset, length, pitches in notes:
        end = offset + length
        if end >= quarters - _EPS:
            end = total  # the final chord holds to the end of the completed bar
        for t in range(math.ceil(offset - _EPS), math.ceil(end - _EPS)):
            steps[t].update(pitches)
    return [sorted(step) for step in steps], quarters, completion


def parse_chorale(path: str | os.PathLike[str], expand_repeats: bool = True) -> dict[str, Any] | str:
    """One corpus file as ``{"name", "file", "steps", "tonic", "tonic_from", "quarters", "completion", "written",
    "expanded"}`` (steps, quarters, completion: :func:`quarter_steps` of the four voices at written pitch, with
    the repeats expanded or as written; written, expanded: the steps both ways, for :func:`duplicate_of`), or the
    reason the file is skipped. The tonic is found on the score as written."""
    from music21 import converter, stream

    path = Path(path)
    if path.suffix.lower() not in SCORE_SUFFIXES:
        if path.suffix.lower() == ".krn":
            return "a Humdrum copy of a chorale the corpus also holds as MusicXML"
        if path.suffix.lower() == ".rntxt":
            return "a Roman-numeral analysis, not a score"
        return f"not a MusicXML score ({path.suffix})"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            score = converter.parse(str(path), forceSource=True)  # forceSource: no pickle in music21's scratch
        except Exception as err:
            return f"music21 cannot parse it ({type(err).__name__}: {err})"
        parts = _vocal_parts(score)
        if isinstance(parts, str):
            return parts
        voices = stream.Score(parts)
        tonic, tonic_from = _tonic(voices, parts)
        written = quarter_steps(parts)
        try:
            expanded = quarter_steps(list(voices.expandRepeats().parts))
        except Exception as err:
            if expand_repeats:
                return f"music21 cannot expand its repeats ({type(err).__name__}: {err})"
            expanded = written
    steps, quarters, completion = expanded if expand_repeats else written
    silent = longest = 0
    for step in steps:
        silent = 0 if step else silent + 1
        longest = max(longest, silent)
    if longest > MAX_SILENT_QUARTERS:
        return f"instrumental interludes: the four voices rest together for {longest} quarter notes"
    if len(steps) < 2:
        return f"{len(steps)} quarter notes long"
    return {
        "name": path.name.rsplit(".", 1)[0],
        "file": path.name,
        "steps": steps,
        "tonic": int(tonic),
        "tonic_from": tonic_from,
        "quarters": quarters,
        "completion": completion,
        "written": written[0],
        "expanded": expanded[0],
    }


def _pitch_roll(steps: Sequence[Sequence[int]]) -> np.ndarray:
    roll = np.zeros((len(steps), 128), dtype=bool)
    for t, notes in enumerate(steps):
        roll[t, list(notes)] = True
    return roll


def _near(a: Sequence[Sequence[int]], b: Sequence[Sequence[int]]) -> tuple[int, int] | None:
    """(steps differing, transposition) if ``b`` transposed by -12 .. +12 semitones differs from ``a`` (of the
    same length) in at most DUPLICATE_FRACTION of its steps, else None."""
    if len(a) != len(b):
        return None
    ra, rb = _pitch_roll(a), _pitch_roll(b)
    for shift in range(-12, 13):
        differing = int((np.roll(rb, shift, axis=1) != ra).any(axis=1).sum())
        if differing <= DUPLICATE_FRACTION * len(a):
            return differing, shift
    return None


def duplicate_of(chorale: dict[str, Any], kept: Sequence[dict[str, Any]]) -> str | None:
    """Why ``chorale`` duplicates one of ``kept``, or None: its steps with the repeats expanded, or as written,
    are those of a kept chorale up to a transposition and DUPLICATE_FRACTION of the steps (whichever of
    ``data.expand_repeats``: the same chorales are kept either way)."""
    for other in kept:
        for form in ("expanded", "written"):
            near = _near(chorale[form], other[form])
            if near is not None:
                how = "with the repeats expanded" if form == "expanded" else "as written"
                return (f"a duplicate of {other['name']} ({near[0]} of {len(chorale[form])} steps differ {how}, "
                        f"after transposing by {near[1]:+d})")  # fmt: skip
    return None


def parse_corpus(max_chorales: int | None = None, expand_repeats: bool = True) -> dict[str, Any]:
    """Parse the corpus's chorales (the first ``max_chorales`` of them): ``{"chorales": [...], "skipped":
    [{"file", "reason"}], "music21": version, "converter": CONVERTER_VERSION, "settings": {...}}``."""
    kept: list[dict[str, Any]] = []
    skipped: list[dict[str, str]] = []
    for path in corpus_files():
        if max_chorales is not None and len(kept) >= max_chorales:
            break
        chorale = parse_chorale(path, expand_repeats)
        if isinstance(chorale, dict):
            reason = duplicate_of(chorale, kept)
            if reason is None:
                kept.append(chorale)
                continue
            chorale = reason
        skipped.append({"file": path.name, "reason": chorale})
    return {
        "music21": importlib.metadata.version("music21"),
        "converter": CONVERTER_VERSION,
        "settings": {"max_chorales": max_chorales, "expand_repeats": expand_repeats},
        "chorales": [{k: v for k, v in c.items() if k not in ("written", "expanded")} for c in kept],
        "skipped": skipped,
    }


def music21_version() -> str:
    """The installed music21's version, read without importing it; DataError if it is missing."""
    try:
        return importlib.metadata.version("music21")
    except importlib.metadata.PackageNotFoundError:
        raise DataError("data=jsb_chorales needs the PyPI package music21 (or data.path=FILE): pip install music21"
                        ) from None  # fmt: skip


def cache_path(cache_dir: str | os.PathLike[str] | None, max_chorales: int | None, expand_repeats: bool) -> Path:
    """``<cache dir>/jsb-chorales-music21<version>-c<CONVERTER_VERSION>-<key>.json``, the key hashing the
    settings that change the parse."""
    settings = json.dumps({"max_chorales": max_chorales, "expand_repeats": bool(expand_repeats)}, sort_keys=True)
    key = hashlib.sha256(settings.encode()).hexdigest()[:10]
    return cache_root(cache_dir) / f"jsb-chorales-music21{music21_version()}-c{CONVERTER_VERSION}-{key}.json"


def cached_corpus(
    cache_dir: str | os.PathLike[str] | None, max_chorales: int | None = None, expand_repeats: bool = True
) -> tuple[dict[str, Any], Path]:
    """The parsed corpus and its cache file: read from the cache, else parsed (:func:`parse_corpus`) and
    written there atomically. An unreadable cache file is parsed again and replaced."""
    target = cache_path(cache_dir, max_chorales, expand_repeats)
    if target.is_file():
        try:
            parsed = json.loads(target.read_text(encoding="utf-8"))
            if parsed.get("converter") == CONVERTER_VERSION and isinstance(parsed.get("chorales"), list):
                return parsed, target
        except (OSError, ValueError) as err:
            log.warning("ignoring the unreadable cache file %s (%s)", target, err)
    parsed = parse_corpus(max_chorales, expand_repeats)
    write_text(target, json.dumps(parsed, sort_keys=True, separators=(",", ":")) + "\n")
    return parsed, target


def transposition(tonic: int, transpose: str, octave_shift: int) -> int:
    """Semitones added to every note: tonic -> C by -6 .. +5 (``transpose="c"``) or 0, plus 12 * octave_shift."""
    if transpose not in TRANSPOSE:
        raise DataError(f"data.transpose={transpose}: choose one of {', '.join(TRANSPOSE)}")
    to_c = (6 - int(tonic)) % 12 - 6 if transpose == "c" else 0
    return to_c + 12 * int(octave_shift)


def prepared_steps(chorale: dict[str, Any], transpose: str = "c", octave_shift: int = 1) -> list[list[int]]:
    """A parsed chorale's steps transposed (:func:`transposition`); DataError if a note leaves the keyboard."""
    shift = transposition(chorale["tonic"], transpose, octave_shift)
    steps = [[m + shift for m in step] for step in chorale["steps"]]
    notes = [m for step in steps for m in step]
    if notes and (min(notes) < LOWEST or max(notes) > HIGHEST):
        raise DataError(
            f"data.octave_shift={octave_shift}: {chorale['name']} reaches MIDI {min(notes)}..{max(notes)}, "
            f"outside the piano's {LOWEST}..{HIGHEST}"
        )
    return steps


def split_indices(n: int, val_fraction: float, test_fraction: float, seed: int) -> dict[str, np.ndarray]:
    """Chorale indices of train, val and test (each ascending): a permutation drawn from ``seed`` gives the first
    round(n * test_fraction) to test, the next round(n * val_fraction) to val, the rest to train."""
    order = np.random.default_rng(seed).permutation(n)
    n_test, n_val = round(n * test_fraction), round(n * val_fraction)
    if min(n_test, n_val, n - n_test - n_val) < 1:
        raise DataError(
            f"{n} chorales are too few for train, val and test splits (data.val_fraction={val_fraction}, "
            f"data.test_fraction={test_fraction}); raise data.max_chorales"
        )
    return {
        "train": np.sort(order[n_test + n_val :]),
        "val": np.sort(order[n_test : n_test + n_val]),
        "test": np.sort(order[:n_test]),
    }


# ----------------------------------------------------------------------------------- the standard file
class _PlainUnpickler(pickle.Unpickler):
    """Unpickles containers, numbers and NumPy arrays only: a pickle naming any other class could run code."""

    ALLOWED: ClassVar[set[tuple[str, str]]] = {
        *(("builtins", name) for name in ("set", "frozenset", "list", "tuple", "dict", "int", "float", "bytes")),
        ("copyreg", "_reconstructor"), ("numpy", "dtype"), ("numpy", "ndarray"),
        *((f"numpy.{core}.multiarray", name) for core in ("core", "_core") for name in ("_reconstruct", "scalar")),
        *((f"numpy.{core}.numeric", "_frombuffer") for core in ("core", "_core")),
        ("_codecs", "encode"),  # protocol 2 pickles of NumPy arrays carry their bytes through it
    }  # fmt: skip
    PYTHON2: ClassVar[dict[str, str]] = {"__builtin__": "builtins", "copy_reg": "copyreg"}  # the same, in Python 2

    def find_class(self, module: str, name: str) -> Any:
        if (self.PYTHON2.get(module, module), name) not in self.ALLOWED:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name}")
        return super().find_class(module, name)


def _midi_number(value: Any) -> int | None:
    """``value`` as an int if it is an integral number (int, NumPy integer, float like 60.0), else None."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int | np.integer):
        return int(value)
    if isinstance(value, float | np.floating) and float(value).is_integer():
        return int(value)
    return None


def read_standard_file(path: str | os.PathLike[str]) -> dict[str, list[list[list[int]]]]:
    """The standard split from ``data.path`` (JSON, or a pickle of plain containers): ``{"train"|"val"|"test":
    [chorale, ...]}`` with each chorale a list of steps of MIDI numbers (the file's ``valid`` becomes ``val``).
    Anything else is a DataError naming the file and what is wrong."""
    p = existing_file(path)
    try:
        raw = p.read_bytes()
    except OSError as err:
        raise DataError(f"data.path: cannot read {p} ({err.strerror or err})") from None
    if raw.lstrip()[:1] in (b"{", b"[") or p.suffix.lower() == ".json":
        try:
            data = json.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, ValueError) as err:
            raise DataError(f"data.path: {p} is not valid JSON ({err})") from None
    else:
        try:
            import io

            data = _PlainUnpickler(io.BytesIO(raw), encoding="latin1").load()
        except Exception as err:
            raise DataError(f"data.path: {p} is neither JSON nor a readable pickle ({type(err).__name__}: {err})"
                            ) from None  # fmt: skip
    if not isinstance(data, dict) or not set(FILE_SPLITS) <= set(data):
        got = f"a dict with keys {', '.join(map(repr, sorted(map(str, data))))}" if isinstance(data, dict) else (
            f"a {type(data).__name__}")  # fmt: skip
        raise DataError(f"data.path: {p}: expected a dict with the keys 'train', 'valid', 'test', got {got}")
    out: dict[str, list[list[list[int]]]] = {}
    for name, split in FILE_SPLITS.items():
        chorales = data[name]
        if not isinstance(chorales, list | tuple) or not chorales:
            raise DataError(f"data.path: {p}: {name!r} must be a non-empty list of chorales")
        out[split] = [_check_chorale(p, name, i, chorale) for i, chorale in enumerate(chorales)]
    return out


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else f"{text[:37]}..."


def _check_chorale(p: Path, split: str, i: int, chorale: Any) -> list[list[int]]:
    where = f"data.path: {p}: {split} chorale {i}"
    if isinstance(chorale, np.ndarray) and chorale.ndim == 2:
        chorale = list(chorale)
    if not isinstance(chorale, list | tuple):
        raise DataError(f"{where} is {_short(chorale)}, not a list of steps")
    if len(chorale) < 2:
        raise DataError(f"{where} has {len(chorale)} step(s); a chorale needs at least 2 (an input and a target)")
    steps = []
    for t, step in enumerate(chorale):
        if not isinstance(step, list | tuple | set | frozenset | np.ndarray):
            raise DataError(f"{where} step {t} is {_short(step)}, not a list of MIDI numbers")
        notes = []
        for value in step:
            m = _midi_number(value)
            if m is None or not LOWEST <= m <= HIGHEST:
                raise DataError(f"{where} step {t}: {value!r} is not a MIDI number of the piano ({LOWEST}..{HIGHEST})")
            notes.append(m)
        steps.append(sorted(set(notes)))
    return steps


# ---------------------------------------------------------------------------------------- data module
class PianoRolls(TaggedSequences):
    """The chorales of one split: x = roll[:n-1], y = roll[1:n] stored padded (uint8); ``collate`` gathers a
    batch with one index operation and trims it to its own longest sequence (``TaggedSequences.collate``): (x
    [B, T, 88] float32, lengths [B] int64 = n - 1, y [B, T, 88] float32), zero past each length."""

    def __init__(self, rolls: Sequence[np.ndarray]):
        lengths = np.asarray([len(r) - 1 for r in rolls], dtype=np.int64)
        if (lengths < 1).any():
            raise ValueError("every piano roll needs at least 2 steps")
        x = np.zeros((len(rolls), int(lengths.max(initial=1)), KEYS), dtype=np.uint8)
        y = np.zeros_like(x)
        for i, roll in enumerate(rolls):
            x[i, : lengths[i]] = roll[:-1]
            y[i, : lengths[i]] = roll[1:]
        super().__init__(x, lengths, y)

    @property
    def x(self) -> torch.Tensor:
        """The inputs, [N, T, 88] uint8, padded."""
        return self.ids

    @property
    def y(self) -> torch.Tensor:
        """The targets, [N, T, 88] uint8, padded."""
        return self.labels

    def collate(self, indices: list[int]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        x, lengths, y = super().collate(indices)
        return x.float(), lengths, y.float()


class JsbChoralesDataModule(_Loaders):
    """data=jsb_chorales: piano-roll batches (see the module docstring).

    After ``setup``: ``splits`` (PianoRolls), ``vocab`` (empty: float inputs), ``input_features`` = ``num_outputs``
    = 88, ``key_names`` ("A0" .. "C8"), ``names`` (the chorales of every split: corpus names, or "train/12" for a
    file's), ``counts`` ({split: (chorales, steps)}) and :meth:`describe`, the line logged at setup.
    """

    input_features = KEYS
    num_outputs = KEYS

    def __init__(
        self,
        path: str | None = None,
        max_chorales: int | None = None,
        val_fraction: float = STANDARD_SIZES["val"] / 382,
        test_fraction: float = STANDARD_SIZES["test"] / 382,
        generator_seed: int = 382,
        transpose: str = "c",
        octave_shift: int = 1,
        expand_repeats: bool = True,
        cache_dir: str | None = None,
        batch_size: int = 32,
        num_workers: int = 0,
        pin_memory: bool = False,
        seed: int = 0,
    ):
        super().__init__(batch_size, num_workers, pin_memory, seed)
        if transpose not in TRANSPOSE:
            raise DataError(f"data.transpose={transpose}: choose one of {', '.join(TRANSPOSE)}")
        self.path = path
        self.max_chorales = max_chorales
        self.val_fraction, self.test_fraction = val_fraction, test_fraction
        self.generator_seed = generator_seed
        self.transpose, self.octave_shift, self.expand_repeats = transpose, octave_shift, expand_repeats
        self.cache_dir = cache_dir
        self.vocab = CharVocab([])  # float inputs: no symbols
        self.key_names = key_names()
        self.names: dict[str, list[str]] = {}
        self.counts: dict[str, tuple[int, int]] = {}
        self.cache_file: Path | None = None
        self.music21: str | None = None

    def source_files(self) -> list[Path]:
        """data.path, or the cache file of the parsed corpus (its content: the chorales at written pitch)."""
        if self.path is not None:
            return [Path(self.path).expanduser()]
        if self.cache_file is None:
            self.prepare_data()
        return [self.cache_file] if self.cache_file is not None else []

    def prepare_data(self) -> None:
        if self.path is None and self.cache_file is None:  # parse once, on one process; setup reads the cache
            _, self.cache_file = cached_corpus(self.cache_dir, self.max_chorales, self.expand_repeats)

    def chorales(self) -> dict[str, list[tuple[str, list[list[int]]]]]:
        """{split: [(name, steps), ...]}: the file's splits, or the corpus's chorales prepared and split."""
        if self.path is not None:
            data = read_standard_file(self.path)
            return {s: [(f"{s}/{i}", steps) for i, steps in enumerate(data[s])] for s in SPLITS}
        parsed, self.cache_file = cached_corpus(self.cache_dir, self.max_chorales, self.expand_repeats)
        self.music21 = str(parsed.get("music21"))
        prepared = [(c["name"], prepared_steps(c, self.transpose, self.octave_shift)) for c in parsed["chorales"]]
        parts = split_indices(len(prepared), self.val_fraction, self.test_fraction, self.generator_seed)
        return {s: [prepared[i] for i in parts[s]] for s in SPLITS}

    def setup(self, stage: str | None = None) -> None:
        if self.splits:
            return
        chorales = self.chorales()
        rolls = {s: [roll_from_midi_lists(steps, np.uint8) for _, steps in chorales[s]] for s in SPLITS}
        self.names = {s: [name for name, _ in chorales[s]] for s in SPLITS}
        self.counts = {s: (len(rolls[s]), sum(len(r) for r in rolls[s])) for s in SPLITS}
        self.splits = {s: PianoRolls(rolls[s]) for s in SPLITS}
        log.info(self.describe())

    def describe(self) -> str:
        """One line: the source and, per split, chorales and time steps."""
        if self.path is not None:
            source = f"data.path={self.path}"
        else:
            source = f"music21 {self.music21} corpus, transpose={self.transpose}, octave_shift={self.octave_shift}"
        sizes = ", ".join(f"{s} {c:,} chorales / {n:,} steps" for s, (c, n) in self.counts.items())
        return f"data=jsb_chorales ({source}): {sizes}"


def build_jsb_chorales(data_cfg: Any, seed: int, cache_dir: str | None, **common: Any) -> JsbChoralesDataModule:
    path = data_cfg.get("path")
    if path is None:
        music21_version()  # a missing package is named now, not in the middle of setup
    return JsbChoralesDataModule(
        path=None if path is None else str(path),
        max_chorales=data_cfg.get("max_chorales"),
        val_fraction=float(data_cfg.val_fraction),
        test_fraction=float(data_cfg.test_fraction),
        generator_seed=int(data_cfg.generator_seed),
        transpose=str(data_cfg.get("transpose", "c")),
        octave_shift=int(data_cfg.get("octave_shift", 1)),
        expand_repeats=bool(data_cfg.get("expand_repeats", True)),
        cache_dir=cache_dir,
        seed=seed,
        **common,
    )
