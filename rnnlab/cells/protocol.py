"""What a recurrent cell is: the protocol every cell in ``rnnlab/cells/`` follows, and the lookup by name.

A cell is one layer in one direction. Its NumPy class declares

* ``gates`` (G): the rows of ``weight_ih`` [G*H, I] and ``weight_hh`` [G*H, H] are G blocks of H, in torch's order
  (``gate_names``), and ``states``: ``("h",)``, ``("h", "c")`` or more (the FGR LSTM's previous gates), each
  [B, H] with h first, the state a layer carries and hands over;
* its parameters with torch's names and shapes (``parameter_shapes``): always ``weight_ih``, ``weight_hh``,
  ``bias_ih``, ``bias_hh`` first (drawn by the one initializer in the order torch's modules list them), then any
  ``extra_parameters`` of its own (drawn from a stream keyed by each parameter's full name, so adding a cell changes
  no existing run's numbers: ``rnnlab.models.init``);
* ``forward`` / ``backward`` over a whole sequence, from initial states to final states and back, with the input
  side ``Xp[t] = s ⊙ (W_ih x_t + folded biases)`` computed by the caller for every step at once (one GEMM in the
  stack); valid for any T >= 1 and batch, with variable lengths as a prefix of the batch (``batch_sizes``);
* ``internals`` of a forward cache: its gate activations and states but h by name, [T, B, H] each (the analysis
  pictures, rnnlab/analysis.py);
* a no-gradient ``step`` for generation (batch of one or more rows, state updated in place);
* its torch counterpart (``torch_module``): torch's fused module where one exists (nn.RNN / nn.LSTM / nn.GRU, so
  cuDNN and oneDNN stay in use), otherwise ``rnnlab.models.torch.reference.ReferenceRecurrent`` running the cell's
  own ``torch_step`` (which can also record the step's gate activations, the oracle of ``internals``).

Every array a cell sees is per layer and direction, keyed by the parameter's base name (``weight_hh``, ``bias_hh``,
``weight_ci``, ...); the stack adds the ``_l{k}[_reverse]`` suffix and the owner's prefix. A cell registers itself
with ``@CELLS.register(name, variant=...)`` (``rnnlab.registry``); registering imports NumPy only, never torch.
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np

Params = dict[str, np.ndarray]  # one layer and direction: base name -> array

# readable names of the entries of ``Cell.internals`` (a cell may override ``internal_title``)
INTERNAL_TITLES = {
    "i": "input gate i",
    "f": "forget gate f",
    "g": "cell candidate g",
    "o": "output gate o",
    "r": "reset gate r",
    "z": "update gate z",
    "n": "candidate state n",
    "c": "cell state c",
}


class Cell:
    """Base class of the NumPy cells; subclasses set the class attributes and implement the methods."""

    name: ClassVar[str]
    variant: ClassVar[str] = "standard"
    gates: ClassVar[int]
    gate_names: ClassVar[tuple[str, ...]]
    states: ClassVar[tuple[str, ...]] = ("h",)
    # b_ih and b_hh only ever appear summed: the stack folds both into the input side and gives them equal gradients
    biases_summed: ClassVar[bool] = True
    extra_parameters: ClassVar[tuple[str, ...]] = ()  # base names beyond the four torch ones
    options: ClassVar[tuple[str, ...]] = ()  # model.* keys the cell reads (``nonlinearity``)

    def __init__(self, hidden_size: int, nonlinearity: str = "tanh"):
        self.hidden_size = int(hidden_size)
        self.nonlinearity = nonlinearity

    @property
    def forget_gate(self) -> int | None:
        """The gate block that ``model.forget_bias`` shifts (the LSTM's f), or None: the cell has no forget gate."""
        return None

    @classmethod
    def from_spec(cls, spec: Any) -> Cell:
        """The cell of a NetSpec / Seq2SeqSpec (hidden size and the options the cell reads)."""
        return cls(spec.hidden_size, nonlinearity=getattr(spec, "nonlinearity", "tanh"))

    # ------------------------------------------------------------------------------------------ parameters
    def parameter_shapes(self, input_size: int) -> list[tuple[str, tuple[int, ...]]]:
        """(base name, shape) of one layer and direction, in the order torch's module lists them."""
        gh, h = self.gates * self.hidden_size, self.hidden_size
        return [
            ("weight_ih", (gh, input_size)),
            ("weight_hh", (gh, h)),
            ("bias_ih", (gh,)),
            ("bias_hh", (gh,)),
            *((name, (h,)) for name in self.extra_parameters),
        ]

    def gate_scale(self, dtype: Any) -> np.ndarray:
        """[G*H] row scale of the pre-activations the forward pass computes (1 unless the cell pre-scales)."""
        return np.ones(self.gates * self.hidden_size, dtype=dtype)

    def fold_bias(self, p: Params) -> np.ndarray:
        """[G*H] the biases the stack adds to the input side (before ``gate_scale``)."""
        return p["bias_ih"] + p["bias_hh"]

    # ------------------------------------------------------------------------------------------ sequences
    def forward(
        self, Xp: np.ndarray, state0: tuple[np.ndarray, ...], p: Params, batch_sizes: Any = None, reverse: bool = False
    ) -> tuple[np.ndarray, tuple[np.ndarray, ...], Any]:
        """Xp [T, B, G*H] (contiguous, consumed), state0 (one [B, H] per state) -> (S [T + 1, B, H] hidden states in
        time order, final states, cache). See rnnlab/cells/rnn.py for the conventions of S, reverse and lengths."""
        raise NotImplementedError

    def backward(
        self,
        d_out: np.ndarray | None,
        d_final: tuple[np.ndarray | None, ...],
        cache: Any,
        g: Params,
        dh_norms: np.ndarray | None = None,
    ) -> tuple[np.ndarray, tuple[np.ndarray, ...]]:
        """d_out [T, B, H] or None, d_final (one [B, H] or None per state) -> (dA [T, B, G*H], d_state0).

        dA is the gradient of the input-side pre-activations (unscaled); accumulates the hidden side's gradients
        (``weight_hh``, ``bias_hh`` unless ``biases_summed``, extras) into ``g``. The cache serves one backward."""
        raise NotImplementedError

    def internals(self, cache: Any) -> dict[str, np.ndarray]:
        """What the forward pass of one layer and direction computed inside the recurrence, for the analysis pictures
        (``rnnlab.analysis``): [T, B, H] arrays by name, in time order and the cache's row (packing) order, each
        gate's activation under its name in ``gate_names`` and every state but h (the LSTM's ``c``: c_t at step t).
        Steps past a row's length (rows >= ``batch_sizes[t]``) are NaN. New arrays; the cache must not have been
        through backward (which overwrites it). Default: none (the plain RNN: its state is h alone)."""
        return {}

    @property
    def sigmoid_gates(self) -> tuple[str, ...]:
        """The gates whose activations are sigmoids, in [0, 1] (the colour scale of their pictures). The naming rule
        of the built-in cells: every gate but a candidate (the LSTM's ``g``, the GRU's ``n``; the RNN's ``h``)."""
        return tuple(name for name in self.gate_names if name not in ("g", "n", "h"))

    def internal_title(self, name: str) -> str:
        """A readable name of an entry of ``internals`` (a picture's title)."""
        return INTERNAL_TITLES.get(name, name)

    # ------------------------------------------------------------------------------------------ generation
    def prepare_step(self, p: Params) -> Any:
        """What ``step`` needs, precomputed from one layer's parameters (rebuilt whenever they change)."""
        raise NotImplementedError

    def step(self, x_side: np.ndarray, state: list[np.ndarray], prep: Any) -> None:
        """One step without gradient: x_side [..., G*H] the scaled input side, state one [..., H] array per state,
        updated in place (h first)."""
        raise NotImplementedError

    # ------------------------------------------------------------------------------------------------ torch
    def torch_module(self, input_size: int, num_layers: int, bidirectional: bool, dropout: float) -> Any:
        """The torch counterpart of a stack of this cell, batch_first, with parameters named as
        ``parameter_shapes`` (``weight_ih_l0``, ...). Default: the reference module running ``torch_step``."""
        from rnnlab.models.torch.reference import ReferenceRecurrent

        return ReferenceRecurrent(self, input_size, num_layers, bidirectional, dropout)

    def torch_step(
        self, x_side: Any, state: tuple[Any, ...], p: dict[str, Any], record: dict[str, Any] | None = None
    ) -> tuple[Any, ...]:
        """The reference torch cell: x_side [B, G*H] = W_ih x_t + b_ih, state -> new state (autograd does the rest).
        With ``record`` (a dict), also stores the step's gate activations in it under their ``gate_names``: the
        torch side of ``internals``, what tests/test_analysis.py holds the NumPy cell's internals to."""
        raise NotImplementedError(f"cell {self.name} ({self.variant}) has no torch step")


def cell_class(name: str, variant: str = "standard") -> type[Cell]:
    """The registered cell class (``rnnlab.registry.CELLS``); one readable error for an unknown one."""
    from rnnlab.registry import CELLS

    return CELLS.get(name, variant).load()


def cell_for(spec: Any) -> Cell:
    """The cell instance a NetSpec / Seq2SeqSpec describes."""
    return cell_class(spec.cell, getattr(spec, "variant", "standard")).from_spec(spec)


def sigmoid(a: np.ndarray) -> np.ndarray:
    """σ(a) = ½ tanh(½ a) + ½, a new array (no overflow for large |a|)."""
    return 0.5 * np.tanh(0.5 * a) + 0.5


def sigmoid_(a: np.ndarray) -> np.ndarray:
    """σ(a) in place, as ½ tanh(½ a) + ½ (one transcendental, no overflow)."""
    a *= 0.5
    np.tanh(a, out=a)
    a *= 0.5
    a += 0.5
    return a


def steps_of(a: np.ndarray, batch_sizes: Any) -> np.ndarray:
    """A copy of a [T, B, ...] array of a cache with NaN where step t has no valid row (rows >= ``batch_sizes[t]``,
    whose values a forward pass leaves unspecified): what ``Cell.internals`` returns."""
    out = np.array(a)  # (a cache's arrays are floats)
    if batch_sizes is not None:
        for t, b in enumerate(batch_sizes):
            out[t, int(b) :] = np.nan
    return out


def work_array(prep: dict[str, Any], key: str, shape: tuple[int, ...], dtype: Any) -> np.ndarray:
    """A work array kept in a ``prepare_step`` dict, allocated once per shape (generation steps reuse it)."""
    arr = prep.get(key)
    if arr is None or arr.shape != shape:
        arr = prep[key] = np.empty(shape, dtype)
    return arr
