"""task=seq2seq: encoder-decoder (rnnlab/tasks/seq2seq.py); ``model.attention`` picks none, additive or dot."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from rnnlab.errors import ConfigError
from rnnlab.registry import TASKS
from rnnlab.specs import positive
from rnnlab.tasks.specs import TaskConfig


@dataclass
class Seq2SeqTaskConfig(TaskConfig):
    """Encoder-decoder (rnnlab/tasks/seq2seq.py); ``model.attention`` picks none, additive or dot attention."""

    name: str = "seq2seq"
    monitor: str = "val/exact_match"
    mode: str = "max"
    teacher_forcing: float = 1.0  # probability that a decoder step is fed the gold previous token (1: always)
    beam_size: int = 1  # evaluation decoding: 1 is greedy, > 1 beam search (length-normalised scores)
    max_decode_len: int = 40  # tokens a decoded sequence may have, <eos> included
    attention_examples: int = 3  # validation examples drawn as attention heatmaps (val/attention); 0: none


def check(cfg: Any) -> None:
    """Source and target embeddings; the decoding options."""
    if cfg.model.embed_dim == 0:
        raise ConfigError("model.embed_dim must be > 0 for task=seq2seq (source and target embeddings)")
    teacher = cfg.task.teacher_forcing
    if not 0.0 <= teacher <= 1.0:
        raise ConfigError(f"task.teacher_forcing must be in [0, 1], got {teacher}")
    for key in ("task.beam_size", "task.max_decode_len"):
        positive(cfg, key)
    positive(cfg, "task.attention_examples", allow_zero=True)
    for key in ("input_dropout", "recurrent_dropout", "output_dropout", "zoneout", "zoneout_c"):
        if cfg.model.get(key):
            raise ConfigError(
                f"model.{key}={cfg.model[key]} applies to the single-stack tasks, not task=seq2seq "
                "(its encoder and decoder take model.dropout between layers)"
            )


TASKS.add(
    "seq2seq",
    target="rnnlab.tasks.seq2seq:Seq2SeqTask",
    schema=Seq2SeqTaskConfig,
    accepts="seq2seq",  # (source ids, source length, target ids, target length)
    check=check,
    model_keys=("attention",),  # model.attention: the decoder's attention, none elsewhere
    doc="encoder-decoder, attention none|additive|dot, greedy or beam decoding; val/exact_match, val/bleu",
)
