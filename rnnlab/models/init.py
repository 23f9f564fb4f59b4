"""The one initializer both backends take their weights from.

A NumPy generator seeded from ``seed`` draws every parameter in torch's layout and names, in a fixed order:

    embedding.weight                         N(0, 1)                  (torch's nn.Embedding; token inputs only)
    rnn.weight_ih_l{k}[_reverse]             U(-1/sqrt(H), 1/sqrt(H)) (torch's nn.RNN/LSTM/GRU default)
    rnn.weight_hh_l{k}[_reverse]             U(-1/sqrt(H), 1/sqrt(H))
    rnn.bias_ih_l{k}[_reverse]               U(-1/sqrt(H), 1/sqrt(H))
    rnn.bias_hh_l{k}[_reverse]               U(-1/sqrt(H), 1/sqrt(H))
    head.weight, head.bias                   U(-1/sqrt(F), 1/sqrt(F)), F = H * num_directions (nn.Linear)

Gate blocks are stacked along the first axis in torch's order (LSTM i, f, g, o; GRU r, z, n). Arrays are drawn
in float64; a float32 model rounds the same draws. The embedding row of a padding index is zero, as in torch.
"""

from __future__ import annotations

import math

import numpy as np

from rnnlab.models.spec import GATES, NetSpec


def recurrent_shapes(spec: NetSpec) -> list[tuple[str, tuple[int, ...]]]:
    """Names and shapes of the recurrent parameters, in nn.RNN/LSTM/GRU's ``named_parameters`` order."""
    g, h = GATES[spec.cell], spec.hidden_size
    shapes = []
    for layer in range(spec.num_layers):
        in_size = spec.input_size if layer == 0 else spec.features
        for direction in range(spec.num_directions):
            sfx = f"l{layer}" + ("_reverse" if direction else "")
            shapes += [
                (f"weight_ih_{sfx}", (g * h, in_size)),
                (f"weight_hh_{sfx}", (g * h, h)),
                (f"bias_ih_{sfx}", (g * h,)),
                (f"bias_hh_{sfx}", (g * h,)),
            ]
    return shapes


def init_parameters(spec: NetSpec, seed: int) -> dict[str, np.ndarray]:
    """Every parameter of the network described by ``spec``, as float64 arrays keyed by torch's names."""
    rng = np.random.default_rng(seed)
    params: dict[str, np.ndarray] = {}
    if spec.has_embedding:
        emb = rng.standard_normal((spec.vocab_size, spec.embed_dim))
        if spec.padding_idx is not None:
            emb[spec.padding_idx] = 0.0
        params["embedding.weight"] = emb
    bound = 1.0 / math.sqrt(spec.hidden_size)
    for name, shape in recurrent_shapes(spec):
        params[f"rnn.{name}"] = rng.uniform(-bound, bound, size=shape)
    bound = 1.0 / math.sqrt(spec.features)
    params["head.weight"] = rng.uniform(-bound, bound, size=(spec.num_outputs, spec.features))
    params["head.bias"] = rng.uniform(-bound, bound, size=(spec.num_outputs,))
    return params
