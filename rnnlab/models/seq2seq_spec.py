"""The encoder-decoder of task=seq2seq as both backends see it: its description (``Seq2SeqSpec``) and its one
initializer, which draws every parameter in the torch model's names and layouts from one seeded NumPy generator.
The network's equations are in rnnlab.models.numpy.seq2seq; rnnlab.models.torch.seq2seq computes the same ones.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from rnnlab.cells.protocol import cell_for
from rnnlab.models.init import draw_recurrent
from rnnlab.models.spec import NetSpec
from rnnlab.registry import RegistryError

ATTENTIONS = ("none", "additive", "dot")


# ------------------------------------------------------------------------------------------------------ spec
@dataclass(frozen=True)
class Seq2SeqSpec:
    """What an encoder-decoder is, independent of the backend that runs it."""

    cell: str  # a registered cell (encoder and decoder): rnn | lstm | gru | ...
    src_vocab_size: int
    tgt_vocab_size: int
    embed_dim: int  # source and target embeddings
    hidden_size: int
    num_layers: int
    bidirectional: bool  # the encoder only
    attention: str = "none"  # none | additive | dot
    dropout: float = 0.0  # between stacked layers (encoder and decoder)
    nonlinearity: str = "tanh"
    pad_id: int = 0  # in both vocabularies
    sos_id: int = 1  # target vocabulary
    eos_id: int = 2  # target vocabulary
    variant: str = "standard"  # the cell's form (model.variant)
    init: str = "default"  # model.init of the encoder's and decoder's recurrent weights
    forget_bias: float = 0.0  # model.forget_bias

    @property
    def num_directions(self) -> int:
        return 2 if self.bidirectional else 1

    @property
    def features(self) -> int:
        """Width of an encoder output h_j (the attention's values)."""
        return self.hidden_size * self.num_directions

    @property
    def has_attention(self) -> bool:
        return self.attention != "none"

    @property
    def decoder_input_size(self) -> int:
        """E, or E + H with input feeding."""
        return self.embed_dim + (self.hidden_size if self.has_attention else 0)

    @property
    def has_key_projection(self) -> bool:
        """Additive attention projects the values (W_h); dot attention only when F != H."""
        return self.attention == "additive" or (self.attention == "dot" and self.features != self.hidden_size)

    def encoder_spec(self) -> NetSpec:
        return NetSpec(self.cell, self.src_vocab_size, self.embed_dim, self.hidden_size, self.num_layers,
                       self.bidirectional, num_outputs=0, nonlinearity=self.nonlinearity, input_features=self.embed_dim,
                       variant=self.variant, init=self.init, forget_bias=self.forget_bias)  # fmt: skip

    def decoder_spec(self) -> NetSpec:
        return NetSpec(self.cell, self.tgt_vocab_size, self.embed_dim, self.hidden_size, self.num_layers,
                       False, num_outputs=0, nonlinearity=self.nonlinearity, input_features=self.decoder_input_size,
                       variant=self.variant, init=self.init, forget_bias=self.forget_bias)  # fmt: skip

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def check_spec(spec: Seq2SeqSpec) -> None:
    try:
        cell_for(spec)  # a registered cell (one readable error otherwise)
    except RegistryError as err:
        raise ValueError(str(err)) from None
    if spec.attention not in ATTENTIONS:
        raise ValueError(f"attention must be one of {ATTENTIONS}, got {spec.attention!r}")
    if spec.embed_dim < 1:
        raise ValueError("a seq2seq network needs embed_dim >= 1")


# ------------------------------------------------------------------------------------------------ initializer
def init_seq2seq_parameters(spec: Seq2SeqSpec, seed: int) -> dict[str, np.ndarray]:
    """Every parameter, float64, keyed by the torch model's names, drawn in this order from one generator:

        src_embedding.weight       [Vs, E]        N(0, 1), row pad_id zero      (nn.Embedding)
        encoder.{weight,bias}_*    torch layout   U(-1/sqrt(H), 1/sqrt(H))      (nn.RNN/LSTM/GRU; a cell's extra
                                                                                parameters from keyed generators)
        tgt_embedding.weight       [Vt, E]        N(0, 1), row pad_id zero
        decoder.{weight,bias}_*    input E (+ H)  U(-1/sqrt(H), 1/sqrt(H))
        bridge_h.weight, .bias     [H, 2H], [H]   U(-1/sqrt(2H), 1/sqrt(2H))    bidirectional only (nn.Linear)
        bridge_<s>.weight, .bias   [H, 2H], [H]   likewise                      bidirectional: each further state s of
                                                                                the cell (c for an LSTM, ...)
        attention.query.weight     [H, H]         U(-1/sqrt(H), 1/sqrt(H))      additive (W_s)
        attention.key.weight       [H, F]         U(-1/sqrt(F), 1/sqrt(F))      additive, or dot with F != H (W_h)
        attention.v.weight         [1, H]         U(-1/sqrt(H), 1/sqrt(H))      additive (v)
        attention.combine.weight   [H, F + H]     U(-1/sqrt(F+H), 1/sqrt(F+H))  any attention (W_c)
        output.weight, .bias       [Vt, H], [Vt]  U(-1/sqrt(H), 1/sqrt(H))

    The attention's linear maps have no bias, as in the formulas.
    """
    check_spec(spec)
    rng = np.random.default_rng(seed)
    H, E, F = spec.hidden_size, spec.embed_dim, spec.features
    params: dict[str, np.ndarray] = {}

    def uniform(fan_in: int, shape: tuple[int, ...]) -> np.ndarray:
        bound = 1.0 / math.sqrt(fan_in)
        return rng.uniform(-bound, bound, size=shape)

    def embedding(vocab: int) -> np.ndarray:
        w = rng.standard_normal((vocab, E))
        w[spec.pad_id] = 0.0
        return w

    params["src_embedding.weight"] = embedding(spec.src_vocab_size)
    params.update(draw_recurrent(spec.encoder_spec(), rng, seed, "encoder.", 1.0 / math.sqrt(H)))
    params["tgt_embedding.weight"] = embedding(spec.tgt_vocab_size)
    params.update(draw_recurrent(spec.decoder_spec(), rng, seed, "decoder.", 1.0 / math.sqrt(H)))
    if spec.bidirectional:
        for part in cell_for(spec).states:  # one bridge per state: h, and c for an LSTM, ...
            params[f"bridge_{part}.weight"] = uniform(2 * H, (H, 2 * H))
            params[f"bridge_{part}.bias"] = uniform(2 * H, (H,))
    if spec.attention == "additive":
        params["attention.query.weight"] = uniform(H, (H, H))
    if spec.has_key_projection:
        params["attention.key.weight"] = uniform(F, (H, F))
    if spec.attention == "additive":
        params["attention.v.weight"] = uniform(H, (1, H))
    if spec.has_attention:
        params["attention.combine.weight"] = uniform(F + H, (H, F + H))
    params["output.weight"] = uniform(H, (spec.tgt_vocab_size, H))
    params["output.bias"] = uniform(H, (spec.tgt_vocab_size,))
    return params
