"""Compare data=jsb_chorales's chorales (the music21 corpus, rnnlab.data.music) with a file of the standard split.

    .venv/bin/python scripts/compare_jsb_chorales.py STANDARD.json [--cache-dir DIR]

The command behind the numbers of docs/tasks-and-data.md#the-jsb-chorales-datajsb_chorales. It parses the corpus
into the cache both ways (repeats expanded, the default, and as written; timed when it parses), then finds, for
every chorale of the standard file, the closest parsed chorale up to a transposition (the candidates' length
within 8 steps; the transposition tried is the commonest difference of their top notes over the first 12 steps,
and none), counting the steps that differ, a length difference included. It prints how many standard chorales
appear identically, up to a transposition, within 1, 2, 5, 10 steps and within 10 % of their steps, and the
split sizes of the default settings. rnnlab never needs the standard file; this script does.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from rnnlab.data import music  # noqa: E402


def pitch_roll(steps: list[list[int]]) -> np.ndarray:
    roll = np.zeros((len(steps), 128), dtype=bool)
    for t, notes in enumerate(steps):
        roll[t, notes] = True
    return roll


def top_notes(roll: np.ndarray) -> np.ndarray:
    return np.array([np.flatnonzero(row).max() if row.any() else -100 for row in roll])


def closest(standard: np.ndarray, candidates: list[tuple[str, np.ndarray, np.ndarray]]) -> tuple[int, str, int]:
    """(differing steps, name, transposition still needed) of the candidate closest to ``standard``."""
    top = top_notes(standard)
    best: tuple[int, str, int] = (10**9, "", 0)
    for name, roll, their_top in candidates:
        if abs(len(roll) - len(standard)) > 8:
            continue
        n = min(len(standard), len(roll), 12)
        values, counts = np.unique(top[:n] - their_top[:n], return_counts=True)
        shifts = {0} | ({int(values[counts.argmax()])} if counts.max() >= 0.6 * n else set())
        m = min(len(standard), len(roll))
        for shift in shifts:
            differing = int((np.roll(roll[:m], shift, axis=1) != standard[:m]).any(axis=1).sum())
            differing += abs(len(roll) - len(standard))
            best = min(best, (differing, name, shift))
    return best


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("standard", help="the standard split as JSON or pickle ({'train'|'valid'|'test': ...})")
    parser.add_argument("--cache-dir", default=None, help="rnnlab's cache directory (default: the usual one)")
    args = parser.parse_args()
    data = music.read_standard_file(args.standard)
    standard = [pitch_roll(steps) for split in music.SPLITS for steps in data[split]]
    results = {}
    for expand in (True, False):
        parsed_before = music.cache_path(args.cache_dir, None, expand).is_file()
        wall, cpu = time.perf_counter(), time.process_time()
        parsed, path = music.cached_corpus(args.cache_dir, None, expand)
        if not parsed_before:
            print(f"parsed (expand_repeats={expand}) in {time.process_time() - cpu:.0f} s of CPU, "
                  f"{time.perf_counter() - wall:.0f} s wall: {path}")  # fmt: skip
        kept, skipped = len(parsed["chorales"]), len(parsed["skipped"])
        print(f"expand_repeats={expand}: {kept} chorales kept, {skipped} files skipped")
        candidates = []
        for chorale in parsed["chorales"]:
            roll = pitch_roll(music.prepared_steps(chorale, "c", 1))
            candidates.append((chorale["name"], roll, top_notes(roll)))
        results[expand] = [closest(s, candidates) for s in standard]
    results["either"] = [min(a, b) for a, b in zip(results[True], results[False], strict=True)]
    print(f"of the standard file's {len(standard)} chorales:  expanded / as written / either")
    rows = [("identically", lambda d, s, n: d == 0 and s == 0), ("up to a transposition", lambda d, s, n: d == 0)]
    rows += [(f"at most {k} differing steps", lambda d, s, n, k=k: d <= k) for k in (1, 2, 5, 10)]
    rows += [("at most 10 % of the steps differing", lambda d, s, n: d <= 0.1 * n)]
    for label, test in rows:
        counts = [sum(test(d, shift, len(s)) for (d, _, shift), s in zip(results[key], standard, strict=True))
                  for key in (True, False, "either")]  # fmt: skip
        print(f"  {label:40s} {counts[0]:4d} / {counts[1]:4d} / {counts[2]:4d}")
    for expand in (True, False):
        dm = music.JsbChoralesDataModule(cache_dir=args.cache_dir, expand_repeats=expand)
        dm.setup()
        print(dm.describe(), f"(expand_repeats={expand})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
