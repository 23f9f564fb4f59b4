"""rnnlab-generate: sample text from a language-model checkpoint, or music from a polyphonic one, of either backend.

    rnnlab-generate ckpt_path=outputs/runs/.../checkpoints/last.ckpt prompt="ROMEO:" length=500 temperature=0.8
    rnnlab-generate ckpt_path=outputs/runs/.../checkpoints/best.ckpt out=chorale.mid length=64 seed=3

Arguments are key=value pairs (the same style as rnnlab-train's overrides). The checkpoint alone rebuilds the
model (network spec, vocabulary, backend and dtype are in it); sampling is the task's own
(``LanguageModelTask.generate``, ``PolyphonicTask.generate_roll``), shared by both backends, so a given seed gives
the same sample every time. A task=polyphonic checkpoint writes a standard MIDI file (``out=``, never over an
existing file) and prints where it went. ``--help`` answers without importing torch or Lightning.
"""

from __future__ import annotations

import math
import sys
import warnings
from pathlib import Path
from typing import Any

from rnnlab.errors import RnnlabError

KEYS: dict[str, tuple[type, Any, str]] = {
    "ckpt_path": (str, None, "a checkpoint written by rnnlab-train task=language_model or task=polyphonic (required)"),
    "prompt": (
        str,
        "",
        'text: the text to continue ("" starts after a newline); music: the first steps, MIDI '
        'numbers 21-108 separated by commas, steps by ";" ("" is the chord 48,64,67,72)',
    ),
    "length": (int, 300, f"characters or steps to generate (1 to {1_000_000:,})"),
    "temperature": (
        float,
        None,
        "softmax temperature (text, default 0.8) or p = sigmoid(z / T) (music, default "
        "1.0); finite, > 0, lower is more conservative",
    ),
    "top_k": (int, None, "text: sample among the k most likely characters only (null: all)"),
    "out": (str, None, "music: the MIDI file to write (required for a task=polyphonic checkpoint; never overwritten)"),
    "tempo": (float, 100.0, "music: quarter notes (steps) per minute in the MIDI file"),
    "seed": (int, 0, "seed of the sampler's NumPy generator (0 to 2**32 - 1)"),
    "device": (str, "cpu", "torch device for a torch-backend checkpoint (cpu, cuda, cuda:1, ...)"),
}

MAX_LENGTH = 1_000_000  # characters: about a minute of batch-1 sampling
USAGE = (
    "usage: rnnlab-generate ckpt_path=PATH [prompt=TEXT] [length=N] [temperature=T] [top_k=K] [seed=S] [device=D] "
    "[out=FILE.mid] [tempo=BPM]"
)
GENERATING_TASKS = ("language_model", "polyphonic")
DEFAULT_CHORD = "48,64,67,72"  # C3 E4 G4 C5: a C major chord, one note per voice


class UsageError(RnnlabError):
    """A bad argument: reported as one line, exit status 1."""


def help_text() -> str:
    lines = [USAGE, "", (__doc__ or "").strip().split("\n\n")[0], "", "arguments:"]
    for key, (kind, default, text) in KEYS.items():
        shown = "required" if key == "ckpt_path" else f"default {default!r}"
        lines.append(f"  {key:<12} {text} [{kind.__name__}, {shown}]")
    return "\n".join(lines)


def key_value_pairs(argv: list[str], known: Any, usage: str) -> list[tuple[str, str]]:
    """(key, raw value) of each ``key=value`` argument (a leading ``+`` allowed, as in Hydra overrides), for
    rnnlab-generate and rnnlab-predict; UsageError naming the argument that is not key=value or not in ``known``."""
    pairs = []
    for arg in argv:
        key, sep, raw = arg.partition("=")
        key = key.strip().lstrip("+")
        if not sep:
            raise UsageError(f"{arg!r} is not key=value ({usage})")
        if key not in known:
            raise UsageError(f"unknown argument {key!r}; valid: {', '.join(known)}")
        pairs.append((key, raw))
    return pairs


def unquoted(raw: str) -> str:
    """A text value without the one pair of matching quotes around it, if any."""
    return raw[1:-1] if len(raw) >= 2 and raw[0] == raw[-1] and raw[0] in "\"'" else raw


def parse(argv: list[str]) -> dict[str, Any]:
    """key=value arguments -> typed values; unknown keys and bad values raise UsageError naming the key."""
    values = {key: default for key, (_, default, _) in KEYS.items()}
    for key, raw in key_value_pairs(argv, KEYS, USAGE):
        kind = KEYS[key][0]
        if raw.lower() in ("null", "none") and key in ("top_k", "temperature", "out"):
            values[key] = None
            continue
        if kind is str:
            values[key] = unquoted(raw)
            continue
        try:
            values[key] = kind(raw)
        except ValueError:
            raise UsageError(f"{key} must be {'an integer' if kind is int else 'a number'}, got {raw!r}") from None
    if not values["ckpt_path"]:
        raise UsageError(f"ckpt_path is required ({USAGE})")
    if not 1 <= values["length"] <= MAX_LENGTH:
        raise UsageError(f"length must be in [1, {MAX_LENGTH}], got {values['length']}")
    if values["temperature"] is not None and not (values["temperature"] > 0 and math.isfinite(values["temperature"])):
        raise UsageError(f"temperature must be a finite number > 0, got {values['temperature']}")
    if not 0 <= values["seed"] < 2**32:
        raise UsageError(f"seed must be in [0, 2**32), got {values['seed']}")
    if values["top_k"] is not None and values["top_k"] < 1:
        raise UsageError(f"top_k must be >= 1 or null, got {values['top_k']}")
    if not (values["tempo"] > 0 and math.isfinite(values["tempo"])):
        raise UsageError(f"tempo must be a finite number > 0, got {values['tempo']}")
    return values


def parse_chords(text: str) -> Any:
    """A music prompt ("60,64,67;62,65,71": MIDI numbers by step) as a 0/1 piano roll [steps, 88]; "" is
    ``DEFAULT_CHORD``. A step may be empty (a rest). A bad number is a UsageError naming it."""
    import numpy as np

    from rnnlab.tasks.polyphonic import KEYS, LOWEST_MIDI

    steps = (text.strip() or DEFAULT_CHORD).split(";")
    roll = np.zeros((len(steps), KEYS))
    for t, step in enumerate(steps):
        for item in (x.strip() for x in step.split(",")):
            if not item:
                continue
            try:
                midi = int(item)
            except ValueError:
                raise UsageError(f"prompt: {item!r} is not a MIDI note number (step {t + 1})") from None
            if not LOWEST_MIDI <= midi < LOWEST_MIDI + KEYS:
                raise UsageError(f"prompt: MIDI note {midi} is off the piano (21 to 108; step {t + 1})")
            roll[t, midi - LOWEST_MIDI] = 1.0
    return roll


def load_generator(path: str, device: str = "cpu") -> Any:
    """The task module of a language-model or polyphonic checkpoint (either backend); one-line errors for anything
    else."""

    def check(task: str, saved: dict[str, Any]) -> None:
        if task not in GENERATING_TASKS:
            raise UsageError(
                f"ckpt_path: a task={task} checkpoint; rnnlab-generate needs task=language_model or "
                f"task=polyphonic: {path}"
            )

    return load_task(path, device, check)


def load_task(path: str, device: str, check: Any) -> Any:
    """The task module of a checkpoint of either backend, in eval mode, with the plug-ins its run recorded
    imported first; ``check(task_name, checkpoint)`` refuses a task the caller cannot use (raise UsageError).
    One-line UsageErrors for a missing, empty, corrupt or non-finite checkpoint."""
    import torch

    file = Path(path).expanduser()
    if file.is_dir():
        raise UsageError(f"ckpt_path: a directory, not a checkpoint file: {path}")
    if not file.is_file():
        raise UsageError(f"ckpt_path: file not found: {path}")
    if file.stat().st_size == 0:
        raise UsageError(f"ckpt_path: the file is empty: {path}")
    try:
        where = torch.device(device)
    except (RuntimeError, ValueError) as err:
        raise UsageError(f"device: not a torch device: {device!r} ({str(err).splitlines()[0]})") from None
    if where.type == "cuda" and not torch.cuda.is_available():
        raise UsageError(f"device={device}: CUDA is not available on this machine; use device=cpu")
    try:
        saved = torch.load(file, map_location="cpu", weights_only=False, mmap=True)
    except Exception as err:  # pickle, zip and mmap errors all mean "not a checkpoint"
        raise UsageError(f"ckpt_path: not a checkpoint ({type(err).__name__}): {path}") from None
    if not isinstance(saved, dict) or "state_dict" not in saved:
        raise UsageError(f"ckpt_path: not a Lightning checkpoint: {path}")
    from rnnlab.runtime.resume import nonfinite

    bad = nonfinite(saved)
    if bad:
        more = f" and {len(bad) - 1} more" if len(bad) > 1 else ""
        raise UsageError(
            f"ckpt_path: the checkpoint's weights hold NaN or Inf ({bad[0]}{more}); it cannot be used: {path}"
        )
    task = (saved.get("hyper_parameters", {}).get("task") or {}).get("name")
    from rnnlab.registry import RegistryError
    from rnnlab.runtime.resume import import_recorded_plugins

    import_recorded_plugins(saved, path)  # the run's plug-in cell or task, without plugins= here
    check(str(task), saved)
    from rnnlab.tasks import task_class

    task_cls = task_class(str(task))
    backend = saved["hyper_parameters"].get("backend", "torch")
    with warnings.catch_warnings():  # a NumPy checkpoint's torch state dict is empty by design
        warnings.filterwarnings("ignore", message=".*contains no parameters")
        try:
            model = task_cls.load_from_checkpoint(file, map_location="cpu" if backend == "numpy" else device)
        except RegistryError as err:  # a plug-in's cell, from a checkpoint that does not record its module
            raise UsageError(
                f"ckpt_path: {err} (and no plug-in module that the checkpoint records registers it): {path}"
            ) from None
    model.eval()
    return model


def generate(values: dict[str, Any]) -> str:
    """The sampled text, or (music) the line saying where the MIDI file went."""
    out = values["out"]
    if out is not None:  # before loading: never overwrite, and fail early on a directory that is not there
        target = Path(out).expanduser()
        if target.exists():
            raise UsageError(f"out: {out} exists; choose another file name (rnnlab-generate never overwrites)")
        if not target.parent.is_dir():
            raise UsageError(f"out: no directory {target.parent} for {out}")
    model = load_generator(values["ckpt_path"], values["device"])
    if model.hparams.task["name"] == "polyphonic":
        return generate_music(model, values)
    if out is not None:
        raise UsageError("out: only a task=polyphonic checkpoint writes a file; text is printed")
    unknown = [ch for ch in values["prompt"] if ch not in model.vocab.stoi]
    if unknown:
        raise UsageError(f"prompt: character {unknown[0]!r} is not in this model's vocabulary")
    temperature = 0.8 if values["temperature"] is None else values["temperature"]
    return model.generate(values["prompt"], values["length"], temperature, values["top_k"], values["seed"])


def generate_music(model: Any, values: dict[str, Any]) -> str:
    """Sample a piano roll after the prompt's steps and write it as a standard MIDI file (``out``)."""
    if values["out"] is None:
        raise UsageError("out is required for a task=polyphonic checkpoint: the MIDI file to write (out=sample.mid)")
    if values["top_k"] is not None:
        raise UsageError("top_k applies to text only; a polyphonic model draws each key independently")
    from rnnlab.data.music import write_midi

    prompt = parse_chords(values["prompt"])
    temperature = 1.0 if values["temperature"] is None else values["temperature"]
    roll = model.generate_roll(prompt, values["length"], temperature, values["seed"])
    write_midi(roll, values["out"], tempo_bpm=values["tempo"])
    notes = int(roll[len(prompt) :].sum())
    return (f"wrote {values['out']}: {len(roll)} steps ({len(prompt)} of prompt), {notes} sampled note onsets or "
            f"holds, {values['tempo']:g} steps per minute")  # fmt: skip


def main(argv: list[str] | None = None) -> None:
    args = sys.argv[1:] if argv is None else argv
    if any(a in ("-h", "--help", "help") for a in args):
        print(help_text())
        return
    try:
        text = generate(parse(args))
    except RnnlabError as err:
        print(f"rnnlab-generate: error: {err}", file=sys.stderr)
        sys.exit(1)
    print(text)


if __name__ == "__main__":
    main()
