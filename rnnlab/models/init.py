"""The one initializer both backends take their weights from.

A NumPy generator seeded from ``seed`` draws every parameter in torch's layout and names, in a fixed order:

    embedding.weight                         N(0, 1)                  (torch's nn.Embedding; token inputs only)
    rnn.weight_ih_l{k}[_reverse]             U(-1/sqrt(H), 1/sqrt(H)) (torch's nn.RNN/LSTM/GRU default)
    rnn.weight_hh_l{k}[_reverse]             U(-1/sqrt(H), 1/sqrt(H))
    rnn.bias_ih_l{k}[_reverse]               U(-1/sqrt(H), 1/sqrt(H))
    rnn.bias_hh_l{k}[_reverse]               U(-1/sqrt(H), 1/sqrt(H))
    rnn.<extra>_l{k}[_reverse]               U(-1/sqrt(H), 1/sqrt(H))  a cell's own parameters (peepholes, ...),
                                                                       each from a generator keyed by its full name
    head.weight, head.bias                   U(-1/sqrt(F), 1/sqrt(F)), F = H * num_directions (nn.Linear)

The extra parameters of a cell do not draw from the shared generator: each has its own, seeded from (seed, sha256 of
its name), so adding a cell (or a variant with more parameters) changes no other parameter's draw, and no existing
run's numbers. Gate blocks are stacked along the first axis in torch's order (LSTM i, f, g, o; GRU r, z, n).
Arrays are drawn in float64; a float32 model rounds the same draws. The embedding row of a padding index is zero,
as in torch.
"""

from __future__ import annotations

import hashlib
import math
import re

import numpy as np

from rnnlab.cells.protocol import cell_for
from rnnlab.models.spec import NetSpec

SUFFIX = re.compile(r"_l\d+(_reverse)?$")  # weight_ci_l0_reverse -> weight_ci


def recurrent_shapes(spec: NetSpec) -> list[tuple[str, tuple[int, ...]]]:
    """Names and shapes of the recurrent parameters, in nn.RNN/LSTM/GRU's ``named_parameters`` order (a cell's
    extra parameters after the four of each layer and direction)."""
    cell = cell_for(spec)
    shapes = []
    for layer in range(spec.num_layers):
        in_size = spec.input_size if layer == 0 else spec.features
        for direction in range(spec.num_directions):
            sfx = f"l{layer}" + ("_reverse" if direction else "")
            shapes += [(f"{name}_{sfx}", shape) for name, shape in cell.parameter_shapes(in_size)]
    return shapes


def keyed_generator(seed: int, name: str) -> np.random.Generator:
    """The generator of one extra parameter: seeded from ``seed`` and its full name alone."""
    digest = hashlib.sha256(name.encode()).digest()
    return np.random.default_rng([seed, *np.frombuffer(digest[:16], dtype=np.uint32).tolist()])


INITS = ("default", "orthogonal", "identity")  # model.init


def orthogonal(rng: np.random.Generator, n: int) -> np.ndarray:
    """A random n x n orthogonal matrix, uniform over the orthogonal group (QR of a Gaussian, signs fixed by R's
    diagonal, as torch.nn.init.orthogonal_)."""
    q, r = np.linalg.qr(rng.standard_normal((n, n)))
    return q * np.sign(np.diag(r))


def draw_recurrent(
    spec: NetSpec, rng: np.random.Generator, seed: int, prefix: str, bound: float
) -> dict[str, np.ndarray]:
    """Every recurrent parameter. ``model.init=default``: U(-bound, bound), the four torch ones from ``rng`` in order,
    a cell's extra parameters each from its ``keyed_generator``. The other initialisations start from these same
    draws (so that ``rng`` is consumed alike and the embedding and head do not change) and then replace:

    * ``orthogonal``: every gate block of weight_hh ([H, H], rows g*H .. (g+1)*H) by a random orthogonal matrix
      drawn from the keyed generator of ``<name>#orthogonal``;
    * ``identity`` (the IRNN of Le et al. 2015, one-gate cells): weight_hh = I, both biases 0, weight_ih from
      N(0, 0.001²) (keyed generator of ``<name>#identity``).

    ``forget_bias`` is then added to the forget-gate block of bias_ih (cells with a forget gate).
    """
    if spec.init not in INITS:
        raise ValueError(f"model.init={spec.init}: choose one of {', '.join(INITS)}")
    cell = cell_for(spec)
    extras = set(cell.extra_parameters)
    H = spec.hidden_size
    out = {}
    for name, shape in recurrent_shapes(spec):
        full = f"{prefix}{name}"
        base = SUFFIX.sub("", name)
        source = keyed_generator(seed, full) if base in extras else rng
        value = source.uniform(-bound, bound, size=shape)
        if spec.init == "orthogonal" and base == "weight_hh":
            blocks = keyed_generator(seed, f"{full}#orthogonal")
            value = np.concatenate([orthogonal(blocks, H) for _ in range(shape[0] // H)])
        elif spec.init == "identity":
            if cell.gates != 1:
                raise ValueError(f"model.init=identity is defined for one-gate cells, not {spec.cell}")
            if base == "weight_hh":
                value = np.eye(H)
            elif base in ("bias_ih", "bias_hh"):
                value = np.zeros(shape)
            elif base == "weight_ih":
                value = keyed_generator(seed, f"{full}#identity").normal(0.0, 1e-3, size=shape)
        if spec.forget_bias and base == "bias_ih":
            if cell.forget_gate is None:
                raise ValueError(f"model.forget_bias needs a cell with a forget gate, not {spec.cell}")
            value[cell.forget_gate * H : (cell.forget_gate + 1) * H] += spec.forget_bias
        out[full] = value
    return out


def init_parameters(spec: NetSpec, seed: int) -> dict[str, np.ndarray]:
    """Every parameter of the network described by ``spec``, as float64 arrays keyed by torch's names."""
    rng = np.random.default_rng(seed)
    params: dict[str, np.ndarray] = {}
    if spec.has_embedding:
        emb = rng.standard_normal((spec.vocab_size, spec.embed_dim))
        if spec.padding_idx is not None:
            emb[spec.padding_idx] = 0.0
        params["embedding.weight"] = emb
    params.update(draw_recurrent(spec, rng, seed, "rnn.", 1.0 / math.sqrt(spec.hidden_size)))
    bound = 1.0 / math.sqrt(spec.features)
    params["head.weight"] = rng.uniform(-bound, bound, size=(spec.num_outputs, spec.features))
    params["head.bias"] = rng.uniform(-bound, bound, size=(spec.num_outputs,))
    return params
