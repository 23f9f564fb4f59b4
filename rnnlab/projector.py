"""The learned token embeddings in TensorBoard's projector (PROJECTOR tab), for runs on either backend.

``Projector`` (``callbacks.projector``, on by default) writes, at the end of the fit, every token table of the task's
network with ``SummaryWriter.add_embedding``: one point per vocabulary entry, labelled with the token. The task says
what its tables are (``RecurrentTask.token_embeddings``):

* a network with an embedding (``model.embed_dim > 0``): ``embedding`` = ``embedding.weight`` [V, E];
* a network fed one-hot tokens (``model.embed_dim=0``): ``input_weights``, the columns of the first layer's input
  weights, ``weight_ih_l0`` [G·H, V] transposed (then [V, G·H]; bidirectional: ``weight_ih_l0_reverse``'s columns
  appended). Column v is all that token v adds to the first layer's pre-activations, so it is that token's learned
  embedding;
* task=seq2seq: ``src_embedding`` and ``tgt_embedding``, with the source and target vocabularies;
* tasks on float inputs (regress, forecast, polyphonic, classify or tag on numeric features): none.

A table is cut to its first ``max_tokens`` rows (default 5000; null: all): the word vocabularies (imdb,
rt_sentences: up to 20,000 words) list their words by training count, most frequent first, so the cut keeps the
most frequent words, and the files stay a few MB (all 20,000 words of imdb at 128 dimensions: about 25 MB of
tensors.tsv per run). Character and tag vocabularies are far below the cap.

The matrices are the final weights of the fit (those of ``last.ckpt``), read from either backend in torch's names
and layout (``Backend.weights``). They go to every TensorBoard logger of the run (none: nothing is written), under
``<run>/tensorboard/``: ``projector_config.pbtxt`` and ``<global step, 5 digits>/<tag>/{tensors,metadata}.tsv``.
Labels are made printable (:func:`printable`): a space shows as ``␣``, a newline as ``\\n``, a tab as ``\\t``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import lightning as L

SHOWN = {" ": "␣", "\n": "\\n", "\t": "\\t", "\r": "\\r"}


def printable(token: str) -> str:
    """A token as one visible, tab- and newline-free label of the projector's metadata.tsv."""
    if token == "":
        return "∅"
    return "".join(SHOWN.get(ch, ch if ch.isprintable() else ch.encode("unicode_escape").decode()) for ch in token)


def labels(tokens: Sequence[str]) -> list[str]:
    return [printable(str(t)) for t in tokens]


class Projector(L.Callback):
    """Writes the task's token embeddings (module docstring) to TensorBoard's projector when the fit ends (rank 0,
    not under ``trainer.fast_dev_run``). ``callbacks.projector=null`` turns it off; ``max_tokens`` (a positive
    integer or null) caps the rows of each table."""

    def __init__(self, max_tokens: int | None = 5000) -> None:
        whole = isinstance(max_tokens, int) and not isinstance(max_tokens, bool)
        if max_tokens is not None and (not whole or max_tokens < 1):
            raise ValueError(f"callbacks.projector.max_tokens must be a positive integer or null, got {max_tokens!r}")
        self.max_tokens = max_tokens

    def on_fit_end(self, trainer: Any, pl_module: Any) -> None:
        if trainer.global_rank != 0 or trainer.fast_dev_run or not hasattr(pl_module, "token_embeddings"):
            return
        from lightning.pytorch.loggers import TensorBoardLogger

        writers = [logger.experiment for logger in trainer.loggers if isinstance(logger, TensorBoardLogger)]
        if not writers:
            return
        tables = pl_module.token_embeddings(pl_module.backend.weights(pl_module.net))
        for writer in writers:
            for tag, matrix, tokens in tables:
                matrix, tokens = matrix[: self.max_tokens], list(tokens)[: self.max_tokens]
                writer.add_embedding(matrix, metadata=labels(tokens), global_step=int(trainer.global_step), tag=tag)
            writer.flush()
