"""How a dataset cuts a line of text into the tokens of its vocabulary, by name.

A data module that reads text says which of these it uses in ``predict_info()`` (saved with every checkpoint as the
task's ``predict_info`` hyperparameter), so ``rnnlab-predict`` turns new text into the network's inputs exactly as
training did, with the checkpoint alone:

* ``chars``: every character is a token (data=synthetic_text, data=dates, data=cmudict);
* ``words``: tokens separated by whitespace, case kept (data=ner_synth, data=copy);
* ``reviews``: lower-cased words with their contraction and single punctuation marks, HTML tags dropped
  (data=imdb and data=rt_sentences; :func:`reviews`).

This module imports nothing heavy.
"""

from __future__ import annotations

import re
from collections.abc import Callable

_TAGS = re.compile(r"<[^>]+>")
_TOKENS = re.compile(r"[a-z0-9]+(?:'[a-z]+)?|[^\sa-z0-9]")


def chars(text: str) -> list[str]:
    return list(text)


def words(text: str) -> list[str]:
    return text.split()


def reviews(text: str) -> list[str]:
    """Lower-case word and punctuation tokens of ``text``; HTML tags (``<br />``) are dropped.

    A word is a run of letters and digits with at most one apostrophe suffix ("isn't", "film's"); every other
    non-space character is a token of its own.
    """
    return _TOKENS.findall(_TAGS.sub(" ", text.lower()))


TOKENIZERS: dict[str, Callable[[str], list[str]]] = {"chars": chars, "words": words, "reviews": reviews}
