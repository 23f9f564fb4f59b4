"""data=jsb_chorales (rnnlab.data.music): the music21 chorales parsed into the cache, the standard split read from
a file (JSON or pickle), piano-roll batches, the seeded split and the MIDI writer."""

from __future__ import annotations

import json
import pickle
import re
from pathlib import Path

import numpy as np
import pytest
import torch

from rnnlab.data import music
from rnnlab.data.music import (
    JsbChoralesDataModule,
    key_names,
    midi_lists_from_roll,
    read_standard_file,
    roll_from_midi_lists,
    split_indices,
    write_midi,
)
from rnnlab.errors import ConfigError, DataError
from rnnlab.registry import DATASETS

pytestmark = pytest.mark.unit


def roll_of(ds: music.PianoRolls, i: int) -> np.ndarray:
    """Chorale i of a split as its [n, 88] roll, rebuilt from its (x, y) pair."""
    n = int(ds.lengths[i])
    return torch.cat([ds.x[i, :n], ds.y[i, n - 1 : n]]).numpy()


def rolls_by_name(dm: JsbChoralesDataModule) -> dict[str, np.ndarray]:
    return {name: roll_of(dm.splits[s], i) for s in music.SPLITS for i, name in enumerate(dm.names[s])}


# ------------------------------------------------------------------------------ music21 (three chorales)
@pytest.fixture(scope="module")
def three(tmp_path_factory):
    """The first three chorales of the corpus (bwv1.6, bwv2.6, bwv3.6) parsed into a fresh cache, at written
    pitch (transpose none, octave_shift 0) and as the defaults prepare them."""
    cache = tmp_path_factory.mktemp("jsb-cache")
    written = JsbChoralesDataModule(max_chorales=3, transpose="none", octave_shift=0, cache_dir=str(cache))
    written.setup()
    default = JsbChoralesDataModule(max_chorales=3, cache_dir=str(cache))
    default.setup()
    return cache, written, default


def _music21_score(name: str):
    from music21 import converter

    path = next(p for p in music.corpus_files() if p.name == f"{name}.mxl")
    return converter.parse(str(path), forceSource=True)


def test_music21_rolls_are_binary_88_keys_and_four_voices(three):
    _, written, default = three
    for dm in (written, default):
        assert (dm.input_features, dm.num_outputs, len(dm.vocab)) == (88, 88, 0)
        assert dm.key_names == key_names()
        assert {s: c for s, (c, _) in dm.counts.items()} == {"train": 1, "val": 1, "test": 1}
        rolls = rolls_by_name(dm)
        assert sorted(rolls) == ["bwv1.6", "bwv2.6", "bwv3.6"]
        for name, roll in rolls.items():
            assert roll.shape[1] == 88, name
            assert set(np.unique(roll)) <= {0.0, 1.0}, name
            assert 30 <= len(roll) <= 100, name
            keys = roll.sum(axis=1)
            assert keys.max() <= 4, name  # the four voices only (bwv1.6 also has a horn part)
            assert (keys >= 3).mean() > 0.9, name
        assert sum(n for _, n in dm.counts.values()) == sum(len(r) for r in rolls.values())


def test_a_known_chorale_against_music21s_own_reading(three):
    """bwv1.6 (F major, a one-beat pickup, no repeats): one step per quarter note of music21's highestTime plus the
    beat that completes the final bar, the soprano's and the bass's first notes at step 0, the bass's last note
    held at the last two steps; the default preparation is the written roll moved from F to C, an octave up."""
    from music21 import stream

    _, written, default = three
    score = _music21_score("bwv1.6")
    voices = {p.partName: p for p in score.parts}
    soprano, bass = (list(voices[v].flatten().notes) for v in ("Soprano", "Bass"))
    last_bar = voices["Soprano"].getElementsByClass(stream.Measure)[-1]
    completion = last_bar.barDuration.quarterLength - last_bar.duration.quarterLength
    assert (score.highestTime, completion) == (80.0, 1.0)
    roll = rolls_by_name(written)["bwv1.6"]
    assert len(roll) == score.highestTime + completion
    assert roll[0, soprano[0].pitch.midi - 21] == 1
    assert roll[0, bass[0].pitch.midi - 21] == 1
    assert midi_lists_from_roll(roll)[0][0] == bass[0].pitch.midi  # nothing below the bass
    assert roll[-1, bass[-1].pitch.midi - 21] == roll[-2, bass[-1].pitch.midi - 21] == 1
    np.testing.assert_array_equal(roll[-1], roll[-2])  # the final chord holds through the completed bar
    moved = rolls_by_name(default)["bwv1.6"]
    np.testing.assert_array_equal(moved[:, 7:], roll[:, :-7])  # F -> C is -5 semitones, +12: +7 keys
    assert not moved[:, :7].any()
    assert (np.flatnonzero(moved[-1])[0] + 21) % 12 == 0  # ends on C in the bass


def test_repeats_are_written_out_unless_asked(three, tmp_path):
    """bwv2.6 has repeat signs: 60 quarter notes expanded by music21, 44 as written (plus one completing beat)."""
    _, written, _ = three
    score = _music21_score("bwv2.6")
    assert len(rolls_by_name(written)["bwv2.6"]) == score.expandRepeats().highestTime + 1 == 61
    parsed, _ = music.cached_corpus(str(tmp_path), 2, expand_repeats=False)
    assert [len(c["steps"]) for c in parsed["chorales"]] == [81, score.highestTime + 1] == [81, 45]


def test_the_cache_is_written_once_and_reused(three, monkeypatch):
    cache, written, default = three
    files = sorted(cache.glob("jsb-chorales-*.json"))
    assert len(files) == 1, files  # one parse served both preparations
    assert music.music21_version() in files[0].name
    assert f"-c{music.CONVERTER_VERSION}-" in files[0].name
    assert not list(cache.glob(".*tmp"))  # the atomic write left no temporary file
    assert written.source_files() == files
    content = json.loads(files[0].read_text(encoding="utf-8"))
    assert [c["name"] for c in content["chorales"]] == ["bwv1.6", "bwv2.6", "bwv3.6"]
    assert all(s["file"].endswith(".rntxt") for s in content["skipped"])  # the analyses between them

    def refuse(*args, **kwargs):
        raise AssertionError("parsed again instead of reading the cache")

    monkeypatch.setattr(music, "parse_chorale", refuse)
    again = JsbChoralesDataModule(max_chorales=3, cache_dir=str(cache))
    again.prepare_data()
    again.setup()
    for name, roll in rolls_by_name(default).items():
        np.testing.assert_array_equal(rolls_by_name(again)[name], roll)
    with pytest.raises(AssertionError, match="parsed again"):  # another max_chorales is another cache file
        JsbChoralesDataModule(max_chorales=2, cache_dir=str(cache)).setup()


# ------------------------------------------------------------------------------- the standard file format
STANDARD = {
    "train": [
        [[60, 64, 67], [62], [], [64, 67, 72, 76], [65]],  # 5 steps, one empty
        [[21, 108], [48, 60]],  # 2 steps: the lowest and highest keys
        [[55, 59, 62], [55, 59, 62], [57], [59], [60], [62], [64]],  # 7 steps
    ],
    "valid": [[[50], [52], [53]]],
    "test": [[[70, 74], [71, 74], [72, 74], [73]], [[40], [41]]],
}


def _write(tmp_path: Path, content, kind: str = "json") -> Path:
    path = tmp_path / f"jsb.{'json' if kind == 'json' else 'pickle'}"
    if kind == "json":
        path.write_text(json.dumps(content), encoding="utf-8")
    else:
        path.write_bytes(pickle.dumps(content, protocol=2))
    return path


@pytest.mark.parametrize("kind", ["json", "pickle"])
def test_a_standard_file_gives_its_own_splits_and_shifted_pairs(tmp_path, kind):
    path = _write(tmp_path, STANDARD, kind)
    dm = JsbChoralesDataModule(path=str(path), batch_size=2)
    dm.setup()
    assert dm.source_files() == [path]
    assert dm.counts == {"train": (3, 14), "val": (1, 3), "test": (2, 6)}
    assert dm.names["val"] == ["val/0"]
    for split, name in (("train", "train"), ("val", "valid"), ("test", "test")):
        ds = dm.splits[split]
        for i, steps in enumerate(STANDARD[name]):
            roll = roll_from_midi_lists(steps)
            n = len(steps)
            x, lengths, y = ds.collate([i])
            assert x.dtype == y.dtype == torch.float32
            assert x.shape == (1, n - 1, 88)
            assert lengths.tolist() == [n - 1]
            np.testing.assert_array_equal(x[0].numpy(), roll[:-1])
            np.testing.assert_array_equal(y[0].numpy(), roll[1:])
    # a batch is padded with zeros to its own longest sequence
    x, lengths, y = dm.splits["train"].collate([0, 1])
    assert lengths.tolist() == [4, 1]
    assert x.shape == y.shape == (2, 4, 88)
    assert not x[1, 1:].any()
    assert not y[1, 1:].any()
    assert x[1, 0, 0] == 1
    assert x[1, 0, 87] == 1
    x, lengths, y = dm.splits["train"].collate([2, 0, 1])
    assert x.shape == (3, 6, 88)
    assert lengths.tolist() == [6, 4, 1]
    assert not x[1, 4:].any()
    assert not y[1, 4:].any()
    loader = dm.train_dataloader()
    seen = sorted(int(n) for _, lengths, _ in loader for n in lengths)
    assert seen == [1, 4, 6]


def test_json_and_pickle_read_alike(tmp_path):
    a = read_standard_file(_write(tmp_path, STANDARD, "json"))
    b = read_standard_file(_write(tmp_path, STANDARD, "pickle"))
    assert a == b
    assert a["val"] == [[[50], [52], [53]]]
    arrays = {split: [[np.asarray(step, dtype=np.int64) for step in chorale] for chorale in chorales]
              for split, chorales in STANDARD.items()}  # fmt: skip
    arrays["valid"] = [[tuple(float(m) for m in step) for step in chorale] for chorale in STANDARD["valid"]]
    for protocol in (0, 2, 5):  # NumPy steps, float tuples, any pickle protocol
        path = tmp_path / f"arrays{protocol}.pickle"
        path.write_bytes(pickle.dumps(arrays, protocol=protocol))
        assert read_standard_file(path) == a


@pytest.mark.parametrize(
    ("content", "fragment"),
    [
        ([[[60]], [[61]]], "expected a dict with the keys 'train', 'valid', 'test', got a list"),
        ({"train": STANDARD["train"], "test": STANDARD["test"]}, "expected a dict with the keys"),
        ({**STANDARD, "valid": [[[50], [20]]]}, "valid chorale 0 step 1: 20 is not a MIDI number of the piano"),
        ({**STANDARD, "test": [[[109], [60]]]}, "test chorale 0 step 0: 109 is not a MIDI number"),
        ({**STANDARD, "train": [[[60], [62]], [[60]]]}, "train chorale 1 has 1 step(s); a chorale needs at least 2"),
        ({**STANDARD, "valid": []}, "'valid' must be a non-empty list of chorales"),
        ({**STANDARD, "train": [[[60], 62]]}, "train chorale 0 step 1 is 62, not a list of MIDI numbers"),
        ({**STANDARD, "train": [[["C4"], [62]]]}, "train chorale 0 step 0: 'C4' is not a MIDI number"),
    ],
)  # fmt: skip
@pytest.mark.parametrize("kind", ["json", "pickle"])
def test_a_bad_file_is_one_line_naming_it(tmp_path, content, fragment, kind):
    path = _write(tmp_path, content, kind)
    with pytest.raises(DataError) as info:
        JsbChoralesDataModule(path=str(path)).setup()
    message = str(info.value)
    assert "\n" not in message, message
    assert str(path) in message, message
    assert fragment in message, message


def test_missing_unreadable_and_unsafe_files(tmp_path):
    missing = tmp_path / "nope.json"
    with pytest.raises(DataError, match=re.escape(f"data.path: file not found: {missing}")):
        read_standard_file(missing)
    garbage = tmp_path / "garbage.bin"
    garbage.write_bytes(b"\x00\x01 not a pickle")
    with pytest.raises(DataError, match="neither JSON nor a readable pickle") as info:
        read_standard_file(garbage)
    assert str(garbage) in str(info.value)
    broken = tmp_path / "broken.json"
    broken.write_text('{"train": [', encoding="utf-8")
    with pytest.raises(DataError, match=re.escape(f"{broken} is not valid JSON")):
        read_standard_file(broken)
    unsafe = tmp_path / "unsafe.pickle"  # a pickle that names a class could run code: refused
    unsafe.write_bytes(pickle.dumps({"train": Path("x"), "valid": [], "test": []}))
    with pytest.raises(DataError, match="refusing to load pathlib"):
        read_standard_file(unsafe)


# -------------------------------------------------------------------------------------------- the split
def test_the_seeded_split_is_deterministic_disjoint_and_standard_sized():
    cfg = DATASETS.get("jsb_chorales").schema()  # (through the registry: importing the spec first would reorder it)
    parts = split_indices(382, cfg.val_fraction, cfg.test_fraction, cfg.generator_seed)
    assert {s: len(v) for s, v in parts.items()} == {"train": 229, "val": 76, "test": 77}
    every = np.concatenate(list(parts.values()))
    assert sorted(every.tolist()) == list(range(382))  # disjoint and complete
    again = split_indices(382, cfg.val_fraction, cfg.test_fraction, cfg.generator_seed)
    for s in parts:
        np.testing.assert_array_equal(parts[s], again[s])
    other = split_indices(382, cfg.val_fraction, cfg.test_fraction, cfg.generator_seed + 1)
    assert not np.array_equal(parts["test"], other["test"])
    with pytest.raises(DataError, match="2 chorales are too few"):
        split_indices(2, cfg.val_fraction, cfg.test_fraction, 0)


def test_the_split_does_not_depend_on_the_run_seed(three):
    cache, _, default = three
    other = JsbChoralesDataModule(max_chorales=3, cache_dir=str(cache), seed=99)
    other.setup()
    assert other.names == default.names


def test_transposition_to_c_and_the_register():
    """Tonic C, C#, ..., B moves by 0, -1, ..., -6 (F#), then +5 (G), ..., +1 (B); the octave shift adds 12 each."""
    assert [music.transposition(t, "c", 0) for t in range(12)] == [0, -1, -2, -3, -4, -5, -6, 5, 4, 3, 2, 1]
    assert music.transposition(7, "c", 1) == 17
    assert music.transposition(7, "none", -1) == -12
    chorale = {"name": "bwvX", "tonic": 2, "steps": [[38, 62], [], [74]]}  # D -> C: -2, then an octave up
    assert music.prepared_steps(chorale) == [[48, 72], [], [84]]
    with pytest.raises(DataError, match=r"data\.octave_shift=4: bwvX reaches MIDI 84\.\.120"):
        music.prepared_steps(chorale, "c", 4)
    with pytest.raises(DataError, match=r"data\.transpose=d"):
        music.transposition(0, "d", 0)


# -------------------------------------------------------------------------------------- rolls and MIDI
def test_rolls_and_midi_lists_round_trip():
    steps = [[60, 64, 67], [], [21], [108, 21], [61]]
    roll = roll_from_midi_lists(steps)
    assert roll.shape == (5, 88)
    assert roll.dtype == np.float32
    assert roll.sum() == 7
    assert midi_lists_from_roll(roll) == [[60, 64, 67], [], [21], [21, 108], [61]]
    assert midi_lists_from_roll(torch.from_numpy(roll).bool()) == midi_lists_from_roll(roll)
    names = key_names()
    assert (len(names), names[0], names[60 - 21], names[-1]) == (88, "A0", "C4", "C8")
    with pytest.raises(ValueError, match="MIDI number 20"):
        roll_from_midi_lists([[20]])
    with pytest.raises(ValueError, match=r"0\.5"):
        midi_lists_from_roll(roll * 0.5)
    with pytest.raises(ValueError, match=r"\[steps, 88\]"):
        midi_lists_from_roll(np.zeros((3, 87)))


def _read_midi(path: Path) -> tuple[np.ndarray, int]:
    """The file read back with mido, one step per quarter note: (roll [T, 88], note_on messages)."""
    import mido

    midi = mido.MidiFile(path)
    tpb, now, starts, notes, strikes = midi.ticks_per_beat, 0, {}, [], 0
    for message in midi.tracks[0]:
        now += message.time
        if message.type == "note_on" and message.velocity > 0:
            starts[message.note] = now
            strikes += 1
        elif message.type in ("note_on", "note_off"):
            notes.append((message.note, starts.pop(message.note), now))
    assert not starts, "a note was never released"
    roll = np.zeros((now // tpb, 88), dtype=np.float32)
    for note, start, stop in notes:
        assert start % tpb == 0
        assert stop % tpb == 0
        roll[start // tpb : stop // tpb, note - 21] = 1
    return roll, strikes


@pytest.mark.parametrize(("hold", "strikes"), [("merge", 6), ("restrike", 9)])
def test_write_midi_round_trip(tmp_path, hold, strikes):
    steps = [[60, 67], [60, 67], [60, 69], [], [60], [21, 108], []]  # held, re-struck after a rest, extremes
    roll = roll_from_midi_lists(steps)
    path = write_midi(roll, tmp_path / "out.mid", tempo_bpm=90, hold=hold)
    assert path == tmp_path / "out.mid"
    assert [p.name for p in tmp_path.iterdir()] == ["out.mid"]
    back, struck = _read_midi(path)
    np.testing.assert_array_equal(back, roll)  # the trailing empty step too
    assert struck == strikes  # merge: 60 over steps 0-2, 67 over 0-1, 69, 60, 21, 108
    import mido

    tempo = next(m.tempo for m in mido.MidiFile(path).tracks[0] if m.type == "set_tempo")
    assert round(mido.tempo2bpm(tempo)) == 90


# ------------------------------------------------------------------------------------ config and registry
def test_the_preset_builds_the_data_module(raw_compose, tmp_path):
    from rnnlab.data.datamodules import build_datamodule

    path = _write(tmp_path, STANDARD)
    cfg = raw_compose("data=jsb_chorales", f"data.path={path}", "data.batch_size=4")
    assert (cfg.data.kind, cfg.data.transpose, cfg.data.octave_shift, cfg.data.expand_repeats) == (
        "piano_roll", "c", 1, True)  # fmt: skip
    dm = build_datamodule(cfg.data, 0, str(tmp_path / "cache"))
    assert isinstance(dm, JsbChoralesDataModule)
    assert dm.batch_size == 4
    assert dm.path == str(path)
    entry = DATASETS.get("jsb_chorales")
    entry.meta["check"](cfg)
    with pytest.raises(ConfigError, match=r"data\.transpose must be c or none, got d"):
        entry.meta["check"](raw_compose("data=jsb_chorales", "data.transpose=d"))
    with pytest.raises(ConfigError, match=r"data\.max_chorales must be > 0"):
        entry.meta["check"](raw_compose("data=jsb_chorales", "data.max_chorales=0"))
