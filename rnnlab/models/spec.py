"""What a network is, independent of the backend that runs it."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any


@dataclass(frozen=True)
class NetSpec:
    """Embedding (or one-hot) -> stacked, optionally bidirectional recurrent layers -> linear head."""

    cell: str  # a registered cell (rnnlab.registry.CELLS): rnn | lstm | gru | a plug-in's
    vocab_size: int  # number of input tokens
    embed_dim: int  # 0: one-hot inputs of size vocab_size
    hidden_size: int
    num_layers: int
    bidirectional: bool
    num_outputs: int
    dropout: float = 0.0
    nonlinearity: str = "tanh"
    padding_idx: int | None = None  # classification pads with this token id
    input_features: int = 0  # > 0: float inputs [B, T, input_features] (time series), no embedding
    variant: str = "standard"  # a form of the cell (model.variant: lstm's peephole, ...)
    init: str = "default"  # model.init: default | orthogonal | identity (rnnlab.models.init)
    forget_bias: float = 0.0  # model.forget_bias: added to the forget-gate block of bias_ih
    # inside the recurrence, the same masks on both backends (rnnlab.models.regularisers)
    input_dropout: float = 0.0  # model.input_dropout: variational, one mask per sequence on each layer's input
    recurrent_dropout: float = 0.0  # model.recurrent_dropout: on h_{t-1} as the cell reads it (Gal & Ghahramani)
    output_dropout: float = 0.0  # model.output_dropout: on each layer's output
    zoneout: float = 0.0  # model.zoneout: probability that a unit of h keeps its previous value (Krueger et al.)
    zoneout_c: float | None = None  # model.zoneout_c: the same for the LSTM's c (None: model.zoneout)

    @property
    def num_directions(self) -> int:
        return 2 if self.bidirectional else 1

    @property
    def input_size(self) -> int:
        if self.input_features > 0:
            return self.input_features
        return self.embed_dim if self.embed_dim > 0 else self.vocab_size

    @property
    def has_embedding(self) -> bool:
        return self.input_features == 0 and self.embed_dim > 0

    @property
    def features(self) -> int:
        """Width of the recurrent output (and of the head's input)."""
        return self.hidden_size * self.num_directions

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_model_config(cls, model_cfg: Any, vocab_size: int, num_outputs: int, **extra: Any) -> NetSpec:
        return cls(
            cell=str(getattr(model_cfg.cell, "value", model_cfg.cell)),
            vocab_size=vocab_size,
            embed_dim=int(model_cfg.embed_dim),
            hidden_size=int(model_cfg.hidden_size),
            num_layers=int(model_cfg.num_layers),
            bidirectional=bool(model_cfg.bidirectional),
            num_outputs=num_outputs,
            dropout=float(model_cfg.dropout),
            nonlinearity=str(getattr(model_cfg.nonlinearity, "value", model_cfg.nonlinearity)),
            variant=str(model_cfg.get("variant", "standard")),
            init=str(model_cfg.get("init", "default")),
            forget_bias=float(model_cfg.get("forget_bias", 0.0)),
            **{k: float(model_cfg.get(k, 0.0)) for k in ("input_dropout", "recurrent_dropout", "output_dropout")},
            zoneout=float(model_cfg.get("zoneout", 0.0)),
            zoneout_c=None if model_cfg.get("zoneout_c") is None else float(model_cfg.zoneout_c),
            **extra,
        )
