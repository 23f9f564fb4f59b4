"""rnnlab-predict: apply a checkpoint of either backend to new inputs.

    rnnlab-predict ckpt_path=outputs/runs/.../checkpoints/best.ckpt input=reviews.txt
    printf 'Dr. Ada Smith visited Paris .\\n' | rnnlab-predict ckpt_path=.../last.ckpt input=- format=jsonl
    rnnlab-predict ckpt_path=.../last.ckpt input=airline.csv > forecasts.csv

Arguments are key=value pairs (the same style as rnnlab-train's overrides). The checkpoint alone rebuilds the
model and says how to read new inputs. task=classify, tag and seq2seq read text, one input per line (a file, or
standard input with ``input=-``): classify prints each line's label and class probabilities, tag its tokens with
their tags, seq2seq its output string (decoded as the task's evaluation decodes). task=forecast reads a CSV with
the training data's columns and prints the forecasts from every origin as CSV; task=anomaly reads a CSV series
and prints every step's score and flag (1: anomalous, at the threshold chosen on validation) as CSV. Each task turns
its raw inputs into records (its ``predict_records``); this command renders them as an aligned table, JSON lines or
CSV. Bad input ends in one line naming the line, column or file, and exit status 1. ``--help`` answers without
importing torch.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from rnnlab.errors import RnnlabError
from rnnlab.generate import UsageError, key_value_pairs, unquoted

KEYS: dict[str, tuple[str | None, str]] = {
    "ckpt_path": (
        None,
        "a checkpoint written by rnnlab-train task=classify, tag, seq2seq, forecast or anomaly (required)",
    ),
    "input": (
        None,
        "a text file (one input per line) or, for forecast and anomaly, a CSV; - reads standard input (required)",
    ),
    "format": (None, "table (aligned), jsonl (JSON per line) or csv; default: table for text, csv for forecast"),
    "device": ("cpu", "torch device for a torch-backend checkpoint (cpu, cuda, cuda:1, ...)"),
}
FORMATS = ("table", "jsonl", "csv")
USAGE = "usage: rnnlab-predict ckpt_path=PATH input=FILE|- [format=table|jsonl|csv] [device=D]"
TEXT_WIDTH = 40  # table: longer text cells are cut to this many characters


def help_text() -> str:
    lines = [USAGE, "", (__doc__ or "").strip().split("\n\n")[0], "", "arguments:"]
    for key, (default, text) in KEYS.items():
        shown = "required" if key in ("ckpt_path", "input") else f"default {default!r}"
        lines.append(f"  {key:<10} {text} [{shown}]")
    return "\n".join(lines)


def parse(argv: list[str]) -> dict[str, Any]:
    """key=value arguments -> values; unknown keys and bad values raise UsageError naming the key."""
    values: dict[str, Any] = {key: default for key, (default, _) in KEYS.items()}
    for key, raw in key_value_pairs(argv, KEYS, USAGE):
        values[key] = unquoted(raw)
    for key in ("ckpt_path", "input"):
        if not values[key]:
            raise UsageError(f"{key} is required ({USAGE})")
    if values["format"] is not None and values["format"] not in FORMATS:
        raise UsageError(f"format must be one of {', '.join(FORMATS)}, got {values['format']!r}")
    return values


# ------------------------------------------------------------------------------------------------ inputs
def read_input(name: str) -> str:
    """The text of the input file (or of standard input for ``-``); one-line errors for a missing, unreadable,
    non-UTF-8 or empty input."""
    shown = "standard input" if name == "-" else name
    if name == "-":
        data = sys.stdin.buffer.read()
    else:
        path = Path(name).expanduser()
        if path.is_dir():
            raise UsageError(f"input: a directory, not a file: {name}")
        if not path.is_file():
            raise UsageError(f"input: file not found: {name}")
        try:
            data = path.read_bytes()
        except OSError as err:
            raise UsageError(f"input: cannot read {name} ({err.strerror or err})") from None
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        line = data[: err.start].count(b"\n") + 1
        raise UsageError(f"input: {shown} is not UTF-8 text (line {line}, byte {err.start})") from None
    if not text.strip():
        raise UsageError(f"input: {shown} is empty")
    return text


def as_lines(text: str) -> list[str]:
    return text.splitlines()


def as_table(text: str, name: str) -> Any:
    """A CSV's rows as a pandas DataFrame (one-line errors for what pandas cannot read, or a header alone)."""
    import io

    import pandas as pd

    shown = "standard input" if name == "-" else name
    try:
        frame = pd.read_csv(io.StringIO(text))
    except (pd.errors.ParserError, pd.errors.EmptyDataError, ValueError) as err:
        raise UsageError(f"input: {shown} is not a CSV file ({' '.join(str(err).split())})") from None
    if frame.empty:
        raise UsageError(f"input: {shown} has a header but no rows")
    return frame


# ------------------------------------------------------------------------------------------------ the model
def predicting_tasks() -> list[str]:
    """The registered tasks whose checkpoints rnnlab-predict can apply (a ``predict_input`` on the task class)."""
    from rnnlab.registry import TASKS

    return [name for name in TASKS.names() if getattr(TASKS.get(name).load(), "predict_input", None)]


def load_predictor(path: str, device: str = "cpu") -> Any:
    """The task module of a checkpoint of a task that predicts (either backend), in eval mode."""
    from rnnlab.generate import load_task

    def check(task: str, saved: dict[str, Any]) -> None:
        from rnnlab.registry import RegistryError
        from rnnlab.tasks import task_class

        try:
            task_cls = task_class(task)
        except RegistryError as err:
            raise UsageError(f"ckpt_path: {err}: {path}") from None
        if getattr(task_cls, "predict_input", None) is None:
            names = ", ".join(f"task={name}" for name in predicting_tasks())
            raise UsageError(f"ckpt_path: a task={task} checkpoint; rnnlab-predict applies {names}: {path}")

    return load_task(path, device, check)


def predict(values: dict[str, Any]) -> tuple[list[dict[str, Any]], str]:
    """(the records, the output format) for parsed arguments."""
    text = read_input(values["input"])  # before the checkpoint: a bad input fails fast
    model = load_predictor(values["ckpt_path"], values["device"])
    inputs = as_table(text, values["input"]) if model.predict_input == "csv" else as_lines(text)
    records = model.predict_records(inputs)
    return records, values["format"] or model.predict_format


# ------------------------------------------------------------------------------------------------ output
def flat(record: dict[str, Any]) -> dict[str, Any]:
    """One level of columns: a dict value becomes a column per key (``p`` -> ``p_negative``, ``p_positive``), a
    list value its items joined by spaces."""
    out: dict[str, Any] = {}
    for key, value in record.items():
        if isinstance(value, dict):
            out.update({f"{key}_{sub}": v for sub, v in value.items()})
        elif isinstance(value, list | tuple):
            out[key] = " ".join(str(v) for v in value)
        else:
            out[key] = value
    return out


def columns_of(rows: list[dict[str, Any]]) -> list[str]:
    return list(dict.fromkeys(key for row in rows for key in row))


def paired_lists(record: dict[str, Any]) -> dict[str, Any]:
    """A record whose list values have equal lengths (tag: tokens and tags) with them merged item by item into one
    list named after them (``tokens/tags``: ``Paris/B-LOC``), so a table shows each token beside its tag."""
    lists = [key for key, value in record.items() if isinstance(value, list | tuple)]
    if len(lists) < 2 or len({len(record[k]) for k in lists}) != 1:
        return record
    merged = ["/".join(str(v) for v in items) for items in zip(*(record[k] for k in lists), strict=True)]
    out: dict[str, Any] = {}
    for key, value in record.items():
        if key == lists[0]:
            out["/".join(lists)] = merged
        elif key not in lists:
            out[key] = value
    return out


def render_table(records: list[dict[str, Any]]) -> str:
    """Aligned columns under a header: numbers right-aligned (floats to 6 significant digits), text left-aligned
    and cut to ``TEXT_WIDTH`` characters; list values (tag's tokens and tags, paired) in full."""
    records = [paired_lists(r) for r in records]
    lists = {key for r in records for key, value in r.items() if isinstance(value, list | tuple)}
    rows = [flat(r) for r in records]
    columns = columns_of(rows)

    def cell(column: str, value: Any) -> str:
        if value is None:
            return ""
        if isinstance(value, float):
            return f"{value:.6g}"
        if column in lists:
            return str(value)
        text = " ".join(str(value).split())
        return text if len(text) <= TEXT_WIDTH else text[: TEXT_WIDTH - 1] + "…"

    cells = [[cell(c, row.get(c)) for c in columns] for row in rows]
    numeric = [all(isinstance(row.get(c), int | float) for row in rows) for c in columns]
    widths = [max([len(c), *(len(r[i]) for r in cells)]) for i, c in enumerate(columns)]

    def line(items: list[str]) -> str:
        return "  ".join(s.rjust(w) if num else s.ljust(w) for s, w, num in zip(items, widths, numeric, strict=True))

    return "\n".join(line(items).rstrip() for items in [columns, *cells])


def render_jsonl(records: list[dict[str, Any]]) -> str:
    import json

    return "\n".join(json.dumps(r, ensure_ascii=False) for r in records)


def render_csv(records: list[dict[str, Any]]) -> str:
    import csv
    import io

    rows = [flat(r) for r in records]
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns_of(rows), lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buffer.getvalue().removesuffix("\n")


RENDERERS = {"table": render_table, "jsonl": render_jsonl, "csv": render_csv}


def main(argv: list[str] | None = None) -> None:
    args = sys.argv[1:] if argv is None else argv
    if any(a in ("-h", "--help", "help") for a in args):
        print(help_text())
        return
    try:
        records, form = predict(parse(args))
    except RnnlabError as err:
        print(f"rnnlab-predict: error: {str(err).splitlines()[0]}", file=sys.stderr)
        sys.exit(1)
    print(RENDERERS[form](records))


if __name__ == "__main__":
    main()
