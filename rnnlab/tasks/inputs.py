"""New inputs for a trained task (``rnnlab-predict``): text lines into token ids the way the checkpoint's data read
its text, with one readable line for any input the model cannot take.

The recipe is the task's ``predict_info`` hyperparameter, the data module's ``predict_info()`` saved with every
checkpoint: ``tokenizer`` (a name in rnnlab.data.tokenizers.TOKENIZERS), ``unknown`` (the vocabulary's token for
an unknown one, or None: then an unknown token is an error naming its line), ``max_len`` (keep the first tokens
only, as training did) and ``empty_as_unknown`` (a line without a token is one unknown token, as training did;
otherwise an error). This module imports nothing heavy: the tasks batch what it returns.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from rnnlab.errors import RnnlabError

CHUNK = 256  # lines per forward pass
KNOWN_SHOWN = 60  # a vocabulary up to this size is listed in an unknown-symbol error


class InputError(RnnlabError):
    """An input the model cannot take; ``str()`` is one line naming the input line, column or file."""


@dataclass
class Line:
    """One input line: its number in the input (1-based), its text, its tokens and their ids."""

    number: int
    text: str
    tokens: list[str]
    ids: list[int]


def predict_info(task: Any) -> dict[str, Any]:
    """The checkpoint's ``predict_info``; an InputError (one line) for a checkpoint written before it was saved."""
    info = task.hparams.get("predict_info")
    if not info:
        raise InputError(
            f"ckpt_path: this task={task.hparams.task['name']} checkpoint does not record how its data reads new "
            "inputs (it was written before rnnlab-predict existed); train it again to use it"
        )
    return dict(info)


def read_lines(lines: Sequence[str], info: dict[str, Any], stoi: dict[str, int]) -> list[Line]:
    """Tokens and ids of every line (``stoi``: the model's vocabulary); InputError names the first line that cannot
    be read: no tokens, or a token outside the vocabulary when the data has no unknown token."""
    from rnnlab.data.tokenizers import TOKENIZERS

    name = str(info.get("tokenizer"))
    if name not in TOKENIZERS:
        raise InputError(f"ckpt_path: the checkpoint reads text with tokenizer {name!r}, which this rnnlab lacks")
    tokenize = TOKENIZERS[name]
    unknown = info.get("unknown")
    unk_id = stoi.get(unknown) if unknown is not None else None
    max_len = info.get("max_len")
    what = "character" if name == "chars" else "token"
    out = []
    for number, text in enumerate(lines, 1):
        tokens = tokenize(text)
        if max_len is not None:
            tokens = tokens[: int(max_len)]
        if not tokens:
            if not (info.get("empty_as_unknown") and unk_id is not None):
                shown = "an empty line" if not text.strip() else f"no {what}s in {text!r}"
                raise InputError(f"input line {number}: {shown}; every line needs at least one {what}")
            out.append(Line(number, text, [], [unk_id]))
            continue
        ids = []
        for tok in tokens:
            i = stoi.get(tok, unk_id)
            if i is None:
                known = sorted(k for k in stoi if what == "token" or len(k) == 1)  # chars: no <pad>
                listed = f" (it knows {' '.join(known)})" if len(known) <= KNOWN_SHOWN else ""
                raise InputError(f"input line {number}: {what} {tok!r} is not in the model's vocabulary{listed}")
            ids.append(i)
        out.append(Line(number, text, tokens, ids))
    return out


def chunks(lines: list[Line], size: int = CHUNK) -> Iterator[list[Line]]:
    for start in range(0, len(lines), size):
        yield lines[start : start + size]


def padded(lines: list[Line], pad_id: int, device: Any = "cpu") -> tuple[Any, Any]:
    """(ids [B, T] int64 padded with ``pad_id``, lengths [B] int64) as torch tensors, the batches' layout."""
    import torch

    lengths = torch.tensor([len(line.ids) for line in lines], dtype=torch.long)
    x = torch.full((len(lines), int(lengths.max())), int(pad_id), dtype=torch.long)
    for b, line in enumerate(lines):
        x[b, : len(line.ids)] = torch.tensor(line.ids, dtype=torch.long)
    return x.to(device), lengths
