"""torch.optim's SGD, Adam, Adagrad and RMSprop, and torch's gradient clipping, for parameters held as NumPy arrays.

Each optimizer takes the network's ``{name: array}`` dict and updates those arrays in place from a
``{name: gradient}`` dict of the same shapes and dtype. The arithmetic is torch 2.x's single-tensor ("for-loop")
implementation, the one torch runs on CPU, replayed operation by operation in the parameters' own dtype: the same
scalars (computed in Python floats, then cast to the dtype as torch casts a Python scalar), the same operations in
the same order, the same state. What remains is rounding that NumPy cannot reproduce: torch's vectorized CPU
kernels evaluate ``a + s * b`` (``add`` with ``alpha``, ``addcmul``, ``lerp``) as one fused multiply-add, and on
AVX-512 its ``sqrt`` is not always correctly rounded. Each costs at most an ulp per operation, so after 25 steps
parameters agree with torch's to a few 1e-16 of their magnitude in float64 (1e-7 in float32), and most are
bit-identical.

Work arrays are allocated once per parameter and every update is written with ``out=``, so a step allocates
nothing. Gradients are read, never modified (clipping is the separate, in-place :func:`clip_gradients`).

``state_dict``/``load_state_dict`` carry the step counts, the buffers (deep copies) and the hyperparameters, as
plain Python and NumPy objects; like torch, loading restores the saved hyperparameters.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Iterable, Mapping
from typing import Any, ClassVar

import numpy as np

__all__ = [
    "OPTIMIZERS",
    "SGD",
    "Adagrad",
    "Adam",
    "Optimizer",
    "RMSprop",
    "build_optimizer",
    "clip_grad_norm",
    "clip_grad_value",
    "clip_gradients",
]


class Optimizer(ABC):
    """Shared bookkeeping: the parameters, per-parameter state and work arrays, the step loop, checkpointing.

    ``state[name]`` holds what torch keeps in ``optimizer.state[param]``, under torch's keys; ``step`` is a
    Python int (torch keeps a float32 tensor). A parameter whose gradient is missing from ``grads`` (or None)
    is skipped, as torch skips a parameter whose ``.grad`` is None.
    """

    hyperparameter_names: ClassVar[tuple[str, ...]] = ()

    def __init__(self, params: Mapping[str, np.ndarray]):
        self.params: dict[str, np.ndarray] = dict(params)
        for name, param in self.params.items():
            if not isinstance(param, np.ndarray) or not np.issubdtype(param.dtype, np.floating):
                raise TypeError(f"parameter {name!r} must be a floating-point numpy array, got {type(param)}")
            if not param.flags.writeable:
                raise ValueError(f"parameter {name!r} is read-only; the optimizer updates it in place")
        self.state: dict[str, dict[str, Any]] = {}
        self._work: dict[str, tuple[np.ndarray, np.ndarray]] = {}

    # ------------------------------------------------------------------------------------------ hyperparameters
    @abstractmethod
    def _configure(self, **hyperparameters: Any) -> None:
        """Check the hyperparameters as torch's constructor does, then set them as attributes."""

    @property
    def hyperparameters(self) -> dict[str, Any]:
        return {key: getattr(self, key) for key in self.hyperparameter_names}

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.hyperparameters.items())
        return f"{type(self).__name__}({len(self.params)} arrays, {args})"

    # --------------------------------------------------------------------------------------------------- step
    def step(self, grads: Mapping[str, np.ndarray | None]) -> None:
        """Update every parameter that has a gradient in ``grads``, in place."""
        params = self.params
        for name, grad in grads.items():
            if grad is None:
                continue
            param = params.get(name)
            if param is None:
                raise KeyError(f"gradient for {name!r}, which is not one of the optimizer's parameters")
            if grad.shape != param.shape or grad.dtype != param.dtype:
                raise ValueError(
                    f"gradient for {name!r} is {grad.dtype}{list(grad.shape)}, "
                    f"the parameter is {param.dtype}{list(param.shape)}"
                )
            work = self._work.get(name)
            if work is None:
                work = self._work[name] = (np.empty_like(param), np.empty_like(param))
            self._update(name, param, grad, work)

    @abstractmethod
    def _update(self, name: str, param: np.ndarray, grad: np.ndarray, work: tuple[np.ndarray, np.ndarray]) -> None:
        """One parameter's update from its gradient; ``work`` is two scratch arrays of the parameter's shape."""

    # ----------------------------------------------------------------------------------------- checkpointing
    def state_dict(self) -> dict[str, Any]:
        """``{"optimizer": class name, "hyperparameters": {...}, "state": {name: {key: int | ndarray}}}``, copied."""
        return {
            "optimizer": type(self).__name__,
            "hyperparameters": dict(self.hyperparameters),
            "state": {
                name: {key: value.copy() if isinstance(value, np.ndarray) else value for key, value in st.items()}
                for name, st in self.state.items()
            },
        }

    def load_state_dict(self, state_dict: Mapping[str, Any]) -> None:
        """Restore a :meth:`state_dict`: hyperparameters and state (copied, cast to each parameter's dtype)."""
        kind = state_dict.get("optimizer")
        if kind != type(self).__name__:
            raise ValueError(f"cannot load the state of a {kind} optimizer into {type(self).__name__}")
        state: dict[str, dict[str, Any]] = {}
        for name, saved in state_dict["state"].items():
            param = self.params.get(name)
            if param is None:
                raise KeyError(f"the saved optimizer state has {name!r}, which is not one of the parameters")
            st: dict[str, Any] = {}
            for key, value in saved.items():
                if key == "step":
                    st[key] = int(value)
                    continue
                array = np.array(value, dtype=param.dtype, copy=True)
                if array.shape != param.shape:
                    raise ValueError(
                        f"saved {key!r} of {name!r} has shape {list(array.shape)}, the parameter {list(param.shape)}"
                    )
                st[key] = array
            state[name] = st
        self._configure(**state_dict["hyperparameters"])
        self.state = state


def _check_nonnegative(**values: float) -> None:
    """torch's constructor checks, with its messages."""
    for key, value in values.items():
        if not value >= 0.0:
            what = {"lr": "learning rate", "eps": "epsilon value"}.get(key, f"{key} value")
            raise ValueError(f"Invalid {what}: {value}")


class SGD(Optimizer):
    r"""Stochastic gradient descent, optionally with (Nesterov) momentum: torch.optim.SGD.

    torch's documented algorithm (γ lr, λ weight decay, μ momentum, τ dampening)::

        for t = 1, 2, ...:
            g_t ← ∇f_t(θ_{t-1})
            if λ ≠ 0:  g_t ← g_t + λ θ_{t-1}
            if μ ≠ 0:
                if t > 1:  b_t ← μ b_{t-1} + (1 - τ) g_t
                else:      b_t ← g_t                      (a copy; dampening is not applied)
                if nesterov:  g_t ← g_t + μ b_t
                else:         g_t ← b_t
            θ_t ← θ_{t-1} - γ g_t

    State: ``momentum_buffer`` (only when momentum ≠ 0), created from the first gradient.
    """

    hyperparameter_names = ("lr", "momentum", "dampening", "nesterov", "weight_decay")

    def __init__(
        self,
        params: Mapping[str, np.ndarray],
        lr: float,
        momentum: float = 0.0,
        dampening: float = 0.0,
        nesterov: bool = False,
        weight_decay: float = 0.0,
    ):
        super().__init__(params)
        self._configure(lr=lr, momentum=momentum, dampening=dampening, nesterov=nesterov, weight_decay=weight_decay)

    def _configure(self, *, lr: float, momentum: float, dampening: float, nesterov: bool, weight_decay: float) -> None:
        _check_nonnegative(lr=lr, momentum=momentum, weight_decay=weight_decay)
        if nesterov and (momentum <= 0 or dampening != 0):
            raise ValueError("Nesterov momentum requires a momentum and zero dampening")
        self.lr, self.momentum, self.dampening = float(lr), float(momentum), float(dampening)
        self.nesterov, self.weight_decay = bool(nesterov), float(weight_decay)

    def _update(self, name: str, param: np.ndarray, grad: np.ndarray, work: tuple[np.ndarray, np.ndarray]) -> None:
        dt = param.dtype.type
        w0, w1 = work
        g = grad
        if self.weight_decay != 0:  # g + λθ  (torch: grad.add(param, alpha=weight_decay))
            np.multiply(param, dt(self.weight_decay), out=w0)
            np.add(w0, g, out=w0)
            g = w0
        momentum = self.momentum
        if momentum != 0:
            st = self.state.setdefault(name, {})
            buf = st.get("momentum_buffer")
            if buf is None:  # torch: grad.detach().clone()
                buf = st["momentum_buffer"] = g.copy()
            else:  # torch: buf.mul_(momentum).add_(grad, alpha=1 - dampening)
                buf *= dt(momentum)
                keep = 1 - self.dampening
                if keep == 1:
                    buf += g
                else:
                    np.multiply(g, dt(keep), out=w1)
                    buf += w1
            if self.nesterov:  # torch: grad.add(buf, alpha=momentum)
                np.multiply(buf, dt(momentum), out=w1)
                np.add(w1, g, out=w1)
                g = w1
            else:
                g = buf
        # torch: param.add_(grad, alpha=-lr)
        np.multiply(g, dt(-self.lr), out=w1)
        param += w1


class Adam(Optimizer):
    r"""Adam (Kingma & Ba), optionally AMSGrad, with L2 weight decay added to the gradient: torch.optim.Adam.

    torch's documented algorithm (γ lr, λ weight decay, ε eps)::

        m_0 ← 0, v_0 ← 0, v_0^max ← 0
        for t = 1, 2, ...:
            g_t ← ∇f_t(θ_{t-1})
            if λ ≠ 0:  g_t ← g_t + λ θ_{t-1}
            m_t ← β1 m_{t-1} + (1 - β1) g_t
            v_t ← β2 v_{t-1} + (1 - β2) g_t²
            m̂_t ← m_t / (1 - β1^t)
            if amsgrad:  v_t^max ← max(v_{t-1}^max, v_t);  v̂_t ← v_t^max / (1 - β2^t)
            else:        v̂_t ← v_t / (1 - β2^t)
            θ_t ← θ_{t-1} - γ m̂_t / (sqrt(v̂_t) + ε)

    As torch evaluates it: ``m.lerp_(g, 1 - β1)``; ``v.mul_(β2).addcmul_(g, g, value=1 - β2)``;
    ``denom = sqrt(v) / sqrt(1 - β2^t) + ε`` (ε outside the bias correction); and
    ``θ.addcdiv_(m, denom, value=-γ / (1 - β1^t))``.

    State: ``step``, ``exp_avg`` (m), ``exp_avg_sq`` (v) and, with amsgrad, ``max_exp_avg_sq``.
    """

    hyperparameter_names = ("lr", "betas", "eps", "weight_decay", "amsgrad")

    def __init__(
        self,
        params: Mapping[str, np.ndarray],
        lr: float,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0.0,
        amsgrad: bool = False,
    ):
        super().__init__(params)
        self._configure(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay, amsgrad=amsgrad)

    def _configure(self, *, lr: float, betas: Iterable[float], eps: float, weight_decay: float, amsgrad: bool) -> None:
        beta1, beta2 = (float(b) for b in betas)
        _check_nonnegative(lr=lr, eps=eps, weight_decay=weight_decay)
        for index, beta in enumerate((beta1, beta2)):
            if not 0.0 <= beta < 1.0:
                raise ValueError(f"Invalid beta parameter at index {index}: {beta}")
        self.lr, self.betas, self.eps = float(lr), (beta1, beta2), float(eps)
        self.weight_decay, self.amsgrad = float(weight_decay), bool(amsgrad)

    def _update(self, name: str, param: np.ndarray, grad: np.ndarray, work: tuple[np.ndarray, np.ndarray]) -> None:
        dt = param.dtype.type
        w0, w1 = work
        beta1, beta2 = self.betas
        st = self.state.get(name)
        if st is None:
            st = self.state[name] = {"step": 0, "exp_avg": np.zeros_like(param), "exp_avg_sq": np.zeros_like(param)}
            if self.amsgrad:
                st["max_exp_avg_sq"] = np.zeros_like(param)
        st["step"] += 1
        step = st["step"]
        g = grad
        if self.weight_decay != 0:  # torch: grad.add(param, alpha=weight_decay)
            np.multiply(param, dt(self.weight_decay), out=w0)
            np.add(w0, g, out=w0)
            g = w0
        # m ← lerp(m, g, 1 - β1), in torch's two forms: m + w (g - m) for |w| < 0.5, else g - (g - m)(1 - w)
        exp_avg = st["exp_avg"]
        weight = dt(1 - beta1)
        np.subtract(g, exp_avg, out=w1)
        if abs(weight) < 0.5:
            w1 *= weight
            exp_avg += w1
        else:
            w1 *= dt(1) - weight
            np.subtract(g, w1, out=exp_avg)
        # v ← β2 v + ((1 - β2) g) g  (torch: exp_avg_sq.mul_(beta2).addcmul_(grad, grad, value=1 - beta2))
        exp_avg_sq = st["exp_avg_sq"]
        exp_avg_sq *= dt(beta2)
        np.multiply(g, dt(1 - beta2), out=w1)
        w1 *= g
        exp_avg_sq += w1
        # scalars in Python floats, exactly as torch's non-capturable branch computes them
        bias_correction1 = 1 - beta1**step
        bias_correction2 = 1 - beta2**step
        step_size = self.lr / bias_correction1
        bias_correction2_sqrt = bias_correction2**0.5
        second = exp_avg_sq
        if self.amsgrad:
            second = st["max_exp_avg_sq"]
            np.maximum(second, exp_avg_sq, out=second)
        # denom = sqrt(v) / sqrt(1 - β2^t) + ε;  θ ← θ + ((-step_size) m) / denom  (torch's addcdiv_ order)
        np.sqrt(second, out=w1)
        w1 /= dt(bias_correction2_sqrt)
        w1 += dt(self.eps)
        np.multiply(exp_avg, dt(-step_size), out=w0)
        w0 /= w1
        param += w0


class Adagrad(Optimizer):
    r"""Adagrad (Duchi et al.) with learning-rate decay: torch.optim.Adagrad.

    torch's documented algorithm (γ lr, λ weight decay, τ initial accumulator value, η lr decay)::

        state_sum_0 ← τ
        for t = 1, 2, ...:
            g_t ← ∇f_t(θ_{t-1})
            γ̃ ← γ / (1 + (t - 1) η)
            if λ ≠ 0:  g_t ← g_t + λ θ_{t-1}
            state_sum_t ← state_sum_{t-1} + g_t²
            θ_t ← θ_{t-1} - γ̃ g_t / (sqrt(state_sum_t) + ε)

    As torch evaluates it: ``std = sqrt(state_sum) + ε`` and ``θ.addcdiv_(g, std, value=-γ̃)``.

    State: ``step`` and ``sum``, created when the optimizer is (as torch does), ``sum`` filled with τ.
    """

    hyperparameter_names = ("lr", "lr_decay", "weight_decay", "initial_accumulator_value", "eps")

    def __init__(
        self,
        params: Mapping[str, np.ndarray],
        lr: float,
        lr_decay: float = 0.0,
        weight_decay: float = 0.0,
        initial_accumulator_value: float = 0.0,
        eps: float = 1e-10,
    ):
        super().__init__(params)
        self._configure(
            lr=lr,
            lr_decay=lr_decay,
            weight_decay=weight_decay,
            initial_accumulator_value=initial_accumulator_value,
            eps=eps,
        )
        for name, param in self.params.items():
            self._init_state(name, param)

    def _configure(
        self, *, lr: float, lr_decay: float, weight_decay: float, initial_accumulator_value: float, eps: float
    ) -> None:
        _check_nonnegative(
            lr=lr,
            lr_decay=lr_decay,
            weight_decay=weight_decay,
            initial_accumulator_value=initial_accumulator_value,
            eps=eps,
        )
        self.lr, self.lr_decay, self.weight_decay = float(lr), float(lr_decay), float(weight_decay)
        self.initial_accumulator_value, self.eps = float(initial_accumulator_value), float(eps)

    def _init_state(self, name: str, param: np.ndarray) -> dict[str, Any]:
        init = param.dtype.type(self.initial_accumulator_value)
        st = self.state[name] = {"step": 0, "sum": np.full_like(param, init)}
        return st

    def _update(self, name: str, param: np.ndarray, grad: np.ndarray, work: tuple[np.ndarray, np.ndarray]) -> None:
        dt = param.dtype.type
        w0, w1 = work
        st = self.state.get(name)
        if st is None:  # a loaded state that lacked this parameter
            st = self._init_state(name, param)
        st["step"] += 1
        step = st["step"]
        g = grad
        if self.weight_decay != 0:  # torch: grad.add(param, alpha=weight_decay)
            np.multiply(param, dt(self.weight_decay), out=w0)
            np.add(w0, g, out=w0)
            g = w0
        clr = self.lr / (1 + (step - 1) * self.lr_decay)
        state_sum = st["sum"]
        np.multiply(g, g, out=w1)  # torch: state_sum.addcmul_(grad, grad, value=1)
        state_sum += w1
        np.sqrt(state_sum, out=w1)  # std = sqrt(state_sum) + eps
        w1 += dt(self.eps)
        np.multiply(g, dt(-clr), out=w0)  # torch: param.addcdiv_(grad, std, value=-clr)
        w0 /= w1
        param += w0


class RMSprop(Optimizer):
    r"""RMSprop (Hinton), optionally centered (Graves) and with momentum: torch.optim.RMSprop.

    torch's documented algorithm (γ lr, α alpha, ε eps, λ weight decay, μ momentum)::

        v_0 ← 0, b_0 ← 0, g^ave_0 ← 0
        for t = 1, 2, ...:
            g_t ← ∇f_t(θ_{t-1})
            if λ ≠ 0:  g_t ← g_t + λ θ_{t-1}
            v_t ← α v_{t-1} + (1 - α) g_t²
            ṽ_t ← v_t
            if centered:  g^ave_t ← α g^ave_{t-1} + (1 - α) g_t;  ṽ_t ← ṽ_t - (g^ave_t)²
            if μ > 0:  b_t ← μ b_{t-1} + g_t / (sqrt(ṽ_t) + ε);  θ_t ← θ_{t-1} - γ b_t
            else:      θ_t ← θ_{t-1} - γ g_t / (sqrt(ṽ_t) + ε)

    As torch evaluates it: ``v.mul_(α).addcmul_(g, g, value=1 - α)``; centered, ``g_ave.lerp_(g, 1 - α)`` and
    ``avg = sqrt(v.addcmul(g_ave, g_ave, value=-1))``, else ``avg = sqrt(v)``; ``avg.add_(ε)`` (ε outside the
    square root); then ``b.mul_(μ).addcdiv_(g, avg)`` and ``θ.add_(b, alpha=-γ)``, or ``θ.addcdiv_(g, avg,
    value=-γ)``. Centered, ``v - g_ave²`` is a difference of nearly equal numbers once the gradient changes
    slowly, and it amplifies the rounding of torch's fused ``addcmul`` and of its sqrt (with α = 0.4 on a smooth
    quadratic, 4e-5 of the largest parameter in float32 after 25 steps, 1e-14 in float64); rounding can even make it
    negative where it is 0 in exact arithmetic, and its square root is then nan, in torch as here.

    State: ``step``, ``square_avg`` (v), ``momentum_buffer`` (b) when μ > 0 and ``grad_avg`` (g^ave) when
    centered, all created at a parameter's first step, filled with zeros (as torch does).
    """

    hyperparameter_names = ("lr", "alpha", "eps", "weight_decay", "momentum", "centered")

    def __init__(
        self,
        params: Mapping[str, np.ndarray],
        lr: float = 1e-2,
        alpha: float = 0.99,
        eps: float = 1e-8,
        weight_decay: float = 0.0,
        momentum: float = 0.0,
        centered: bool = False,
    ):
        super().__init__(params)
        self._configure(lr=lr, alpha=alpha, eps=eps, weight_decay=weight_decay, momentum=momentum, centered=centered)

    def _configure(
        self, *, lr: float, alpha: float, eps: float, weight_decay: float, momentum: float, centered: bool
    ) -> None:
        _check_nonnegative(lr=lr, eps=eps, momentum=momentum, weight_decay=weight_decay, alpha=alpha)
        self.lr, self.alpha, self.eps = float(lr), float(alpha), float(eps)
        self.weight_decay, self.momentum, self.centered = float(weight_decay), float(momentum), bool(centered)

    def _update(self, name: str, param: np.ndarray, grad: np.ndarray, work: tuple[np.ndarray, np.ndarray]) -> None:
        dt = param.dtype.type
        w0, w1 = work
        alpha = self.alpha
        st = self.state.get(name)
        if st is None:
            st = self.state[name] = {"step": 0, "square_avg": np.zeros_like(param)}
            if self.momentum > 0:
                st["momentum_buffer"] = np.zeros_like(param)
            if self.centered:
                st["grad_avg"] = np.zeros_like(param)
        st["step"] += 1
        g = grad
        if self.weight_decay != 0:  # torch: grad.add(param, alpha=weight_decay)
            np.multiply(param, dt(self.weight_decay), out=w0)
            np.add(w0, g, out=w0)
            g = w0
        # v ← α v + ((1 - α) g) g  (torch: square_avg.mul_(alpha).addcmul_(grad, grad, value=1 - alpha))
        square_avg = st["square_avg"]
        square_avg *= dt(alpha)
        np.multiply(g, dt(1 - alpha), out=w1)
        w1 *= g
        square_avg += w1
        if self.centered:
            # g_ave ← lerp(g_ave, g, 1 - α), in torch's two forms: g_ave + w (g - g_ave) for |w| < 0.5,
            # else g - (g - g_ave)(1 - w)
            grad_avg = st["grad_avg"]
            weight = dt(1 - alpha)
            np.subtract(g, grad_avg, out=w1)
            if abs(weight) < 0.5:
                w1 *= weight
                grad_avg += w1
            else:
                w1 *= dt(1) - weight
                np.subtract(g, w1, out=grad_avg)
            # avg = sqrt(v + (-g_ave) g_ave)  (torch: square_avg.addcmul(grad_avg, grad_avg, value=-1).sqrt_())
            np.negative(grad_avg, out=w1)
            w1 *= grad_avg
            w1 += square_avg
            with np.errstate(invalid="ignore"):  # a negative difference: nan, silently, as in torch
                np.sqrt(w1, out=w1)
        else:
            np.sqrt(square_avg, out=w1)  # torch: square_avg.sqrt()
        w1 += dt(self.eps)  # torch: avg.add_(eps)
        if self.momentum > 0:
            # b ← μ b + g / avg  (torch: buf.mul_(momentum).addcdiv_(grad, avg));  θ ← θ + (-γ) b
            buf = st["momentum_buffer"]
            buf *= dt(self.momentum)
            np.divide(g, w1, out=w0)
            buf += w0
            np.multiply(buf, dt(-self.lr), out=w0)
            param += w0
        else:
            # θ ← θ + ((-γ) g) / avg  (torch: param.addcdiv_(grad, avg, value=-lr))
            np.multiply(g, dt(-self.lr), out=w0)
            w0 /= w1
            param += w0


OPTIMIZERS: dict[str, type[Optimizer]] = {"sgd": SGD, "adam": Adam, "adagrad": Adagrad, "rmsprop": RMSprop}


def build_optimizer(params: Mapping[str, np.ndarray], optimizer_cfg: Mapping[str, Any]) -> Optimizer:
    """SGD, Adam, Adagrad or RMSprop from the optimizer config, as ``rnnlab.backends.torch.build_optimizer`` builds
    torch's: ``name`` picks the class, every other key is a constructor argument (``betas`` becomes a tuple)."""
    kwargs = {str(k): v for k, v in optimizer_cfg.items() if k != "name"}
    name = str(optimizer_cfg["name"])
    if name not in OPTIMIZERS:
        raise ValueError(f"unknown optimizer {name!r}; expected one of {sorted(OPTIMIZERS)}")
    if "betas" in kwargs:
        kwargs["betas"] = tuple(kwargs["betas"])
    return OPTIMIZERS[name](params, **kwargs)


# -------------------------------------------------------------------------------------------------- clipping
def _arrays(grads: Mapping[str, np.ndarray | None] | Iterable[np.ndarray | None]) -> list[np.ndarray]:
    values = grads.values() if isinstance(grads, Mapping) else grads
    return [g for g in values if g is not None]


def _vector_norm(x: np.ndarray, p: float) -> np.generic:
    """torch.linalg.vector_norm(x, p) of the flattened array, in its dtype."""
    dt = x.dtype.type
    if x.size == 0:
        return dt(0)
    if p == 2:
        flat = x.reshape(-1)
        return np.sqrt(np.dot(flat, flat))
    if p == math.inf:
        return np.maximum(x.max(), -x.min())
    if p == -math.inf:
        return np.abs(x).min()
    if p == 0:
        return dt(np.count_nonzero(x))
    if p == 1:
        return np.abs(x).sum()
    return (np.abs(x) ** p).sum() ** (1 / p)


def clip_grad_norm(
    grads: Mapping[str, np.ndarray | None] | Iterable[np.ndarray | None],
    max_norm: float,
    norm_type: float = 2.0,
    error_if_nonfinite: bool = False,
) -> float:
    """Scale the gradients in place so their total norm is at most ``max_norm``: torch.nn.utils.clip_grad_norm_.

    As torch 2.x computes it: ``total_norm`` is the ``norm_type``-norm of the per-array norms (``inf`` for the
    largest absolute value), ``clip_coef = max_norm / (total_norm + 1e-6)``, and every gradient is multiplied by
    ``min(clip_coef, 1)`` — unconditionally, so an ``inf`` or ``nan`` norm turns the gradients to nan/0, as torch's.
    Arithmetic is in the gradients' dtype. Returns the total norm (before clipping).
    """
    arrays = _arrays(grads)
    if not arrays:
        return 0.0
    p = float(norm_type)
    dtype = np.result_type(*arrays)
    total = _vector_norm(np.array([_vector_norm(g, p) for g in arrays], dtype=dtype), p)
    if error_if_nonfinite and not np.isfinite(total):
        raise RuntimeError(
            f"The total norm of order {p} for gradients is non-finite, so it cannot be clipped. To disable this "
            "error and scale the gradients by the non-finite norm anyway, set `error_if_nonfinite=False`"
        )
    dt = dtype.type
    coef = np.minimum(dt(max_norm) / (total + dt(1e-6)), dt(1.0))
    with np.errstate(invalid="ignore"):  # inf * 0 when the norm is infinite: nan, silently, as in torch
        for g in arrays:
            g *= g.dtype.type(coef)
    return float(total)


def clip_grad_value(grads: Mapping[str, np.ndarray | None] | Iterable[np.ndarray | None], clip_value: float) -> None:
    """Clamp every gradient in place to ``[-clip_value, clip_value]``: torch.nn.utils.clip_grad_value_."""
    value = float(clip_value)
    for g in _arrays(grads):
        dt = g.dtype.type
        np.clip(g, dt(-value), dt(value), out=g)


def clip_gradients(
    grads: Mapping[str, np.ndarray | None] | Iterable[np.ndarray | None],
    value: float | None,
    algorithm: str | None = "norm",
) -> float | None:
    """Lightning's ``gradient_clip_val``/``gradient_clip_algorithm``: nothing when ``value`` is None or <= 0;
    ``"norm"`` (the default, also for None) is :func:`clip_grad_norm` with norm_type 2 and returns the total
    norm; ``"value"`` is :func:`clip_grad_value` and returns None."""
    algorithm = "norm" if algorithm is None else str(algorithm).lower()
    if algorithm not in ("norm", "value"):
        raise ValueError(f"`gradient_clip_algorithm` {algorithm} is invalid. Allowed algorithms: ['value', 'norm'].")
    if value is None or float(value) <= 0:
        return None
    if algorithm == "value":
        clip_grad_value(grads, value)
        return None
    return clip_grad_norm(grads, value, 2.0)
