"""rnnlab.models.numpy.optim: SGD, Adam, Adagrad, RMSprop and gradient clipping, step by step against torch.

The torch side is built by the project's own ``rnnlab.backends.torch.build_optimizer`` from the same config dict (the
structured config, converted as ``train`` converts it); on CPU torch runs its single-tensor ("for-loop") code.
"""

from __future__ import annotations

import pickle
import tracemalloc
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
import torch
from lightning.pytorch.plugins.precision import Precision
from lightning.pytorch.utilities.enums import GradClipAlgorithmType
from omegaconf import OmegaConf

from rnnlab.backends.torch import build_optimizer as build_torch_optimizer
from rnnlab.config import AdagradConfig, AdamConfig, OptimizerConfig, RMSpropConfig, SGDConfig
from rnnlab.models.numpy.optim import (
    SGD,
    Adagrad,
    Adam,
    Optimizer,
    RMSprop,
    build_optimizer,
    clip_grad_norm,
    clip_grad_value,
    clip_gradients,
)

pytestmark = pytest.mark.unit

SHAPES = {"weight_ih": (17, 13), "bias": (37,), "embedding": (4, 3, 9)}  # odd sizes: SIMD bodies and tails
STEPS = 25
RTOL = {np.float64: 1e-12, np.float32: 1e-6}


def cfg(schema: OptimizerConfig) -> dict[str, Any]:
    """The optimizer dict the tasks receive: the structured config as ``train`` converts it."""
    return OmegaConf.to_container(OmegaConf.structured(schema), resolve=True, enum_to_str=True)


CONFIGS = {
    "sgd": cfg(SGDConfig(lr=0.05)),
    "sgd-momentum": cfg(SGDConfig(lr=0.05, momentum=0.9)),
    "sgd-momentum-dampening": cfg(SGDConfig(lr=0.05, momentum=0.8, dampening=0.3)),
    "sgd-nesterov": cfg(SGDConfig(lr=0.05, momentum=0.9, nesterov=True)),
    "sgd-weight-decay": cfg(SGDConfig(lr=0.05, weight_decay=0.02)),
    "sgd-nesterov-weight-decay": cfg(SGDConfig(lr=0.03, momentum=0.7, nesterov=True, weight_decay=0.05)),
    "adam": cfg(AdamConfig()),
    "adam-weight-decay": cfg(AdamConfig(lr=1e-2, weight_decay=0.05)),
    "adam-amsgrad": cfg(AdamConfig(lr=1e-2, amsgrad=True)),
    "adam-betas-eps": cfg(AdamConfig(lr=3e-3, betas=[0.8, 0.95], eps=1e-4)),
    "adam-beta1-large-weight": cfg(AdamConfig(lr=3e-3, betas=[0.3, 0.9])),  # lerp weight 0.7: torch's other form
    "adam-amsgrad-weight-decay": cfg(AdamConfig(lr=5e-3, betas=[0.5, 0.99], weight_decay=0.01, amsgrad=True)),
    "adagrad": cfg(AdagradConfig()),
    "adagrad-lr-decay": cfg(AdagradConfig(lr=0.1, lr_decay=0.05)),
    "adagrad-initial-accumulator": cfg(AdagradConfig(initial_accumulator_value=0.1)),
    "adagrad-weight-decay": cfg(AdagradConfig(weight_decay=0.02)),
    "adagrad-everything": cfg(AdagradConfig(lr=0.2, lr_decay=0.01, weight_decay=0.01, initial_accumulator_value=0.5)),
    "rmsprop": cfg(RMSpropConfig()),
    "rmsprop-alpha-eps": cfg(RMSpropConfig(lr=0.02, alpha=0.9, eps=1e-3)),
    "rmsprop-centered": cfg(RMSpropConfig(centered=True)),
    "rmsprop-centered-small-alpha": cfg(RMSpropConfig(lr=0.05, alpha=0.4, centered=True)),  # lerp weight 0.6
    "rmsprop-momentum": cfg(RMSpropConfig(lr=0.005, momentum=0.9)),
    "rmsprop-weight-decay": cfg(RMSpropConfig(weight_decay=0.05)),
    "rmsprop-everything": cfg(
        RMSpropConfig(lr=0.003, alpha=0.95, eps=1e-6, weight_decay=0.02, momentum=0.8, centered=True)
    ),
}
# Where the formula itself amplifies rounding past RTOL, so that the comparison would measure the conditioning, not
# the implementation. Centered RMSprop with α <= 0.5 (the lerp's other form) on the quadratic's slowly changing
# gradients: within a few steps v - ḡ² is a small difference of two nearly equal numbers, and an ulp of ḡ² from
# torch's fused multiply-add (addcmul) or of its float32 sqrt (not correctly rounded on CPU) becomes up to 4e-5 of
# the largest parameter in float32 over 25 steps (1e-14 in float64, which stays in). The random gradients, whose
# scale jumps, compare that form in both dtypes.
ILL_CONDITIONED = {("rmsprop-centered-small-alpha", "quadratic", np.float32)}
# one configuration per optimizer with every part of its formula switched on
EVERYTHING = ["sgd-nesterov-weight-decay", "adam-amsgrad-weight-decay", "adagrad-everything", "rmsprop-everything"]


def initial_params(dtype: type, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {name: rng.standard_normal(shape).astype(dtype) for name, shape in SHAPES.items()}


def random_grads(dtype: type, steps: int, seed: int = 1) -> list[dict[str, np.ndarray]]:
    """A fixed sequence of gradients whose scale jumps between steps (so AMSGrad's maximum matters)."""
    rng = np.random.default_rng(seed)
    return [
        {name: (rng.standard_normal(shape) * 10 ** rng.uniform(-2, 1)).astype(dtype) for name, shape in SHAPES.items()}
        for _ in range(steps)
    ]


def quadratic(dtype: type, seed: int = 2) -> Callable[[int, dict[str, np.ndarray]], dict[str, np.ndarray]]:
    """Gradient of sum(a/2 (θ - c)²) at the current parameters (exact zeros included)."""
    rng = np.random.default_rng(seed)
    curvature = {name: rng.uniform(0.1, 3.0, shape).astype(dtype) for name, shape in SHAPES.items()}
    center = {name: rng.standard_normal(shape).astype(dtype) for name, shape in SHAPES.items()}
    curvature["bias"][:5] = 0

    def grad(step: int, params: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return {name: curvature[name] * (params[name] - center[name]) for name in params}

    return grad


def grad_source(mode: str, dtype: type) -> Callable[[int, dict[str, np.ndarray]], dict[str, np.ndarray]]:
    if mode == "random":
        sequence = random_grads(dtype, STEPS)
        return lambda step, params: {name: g.copy() for name, g in sequence[step].items()}
    return quadratic(dtype)


def assert_close(actual: np.ndarray, expected: np.ndarray, rtol: float, what: str) -> None:
    """Relative to each value, with an absolute floor of ``rtol`` times the array's largest magnitude."""
    assert actual.dtype == expected.dtype, what
    np.testing.assert_allclose(actual, expected, rtol=rtol, atol=rtol * float(np.abs(expected).max()), err_msg=what)


# ------------------------------------------------------------------------------------------ parity with torch
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("mode", ["random", "quadratic"])
@pytest.mark.parametrize("config", list(CONFIGS))
def test_matches_torch_every_step(config: str, mode: str, dtype: type) -> None:
    if (config, mode, dtype) in ILL_CONDITIONED:
        pytest.skip("the formula amplifies torch's unreproducible rounding past RTOL here (see ILL_CONDITIONED)")
    optimizer_cfg = CONFIGS[config]
    params = initial_params(dtype)
    tensors = {name: torch.tensor(p.copy(), requires_grad=True) for name, p in params.items()}
    ours = build_optimizer(params, optimizer_cfg)
    theirs = build_torch_optimizer(list(tensors.values()), optimizer_cfg)
    grads_at = grad_source(mode, dtype)
    rtol = RTOL[dtype]
    for step in range(STEPS):
        grads = grads_at(step, params)
        torch_grads = grads_at(step, {name: t.detach().numpy() for name, t in tensors.items()})
        for name, t in tensors.items():
            t.grad = torch.from_numpy(torch_grads[name])
        ours.step(grads)
        theirs.step()
        for name, t in tensors.items():
            assert params[name].dtype == dtype
            assert np.isfinite(params[name]).all(), f"{name} after step {step + 1}"  # nan == nan would pass
            assert_close(params[name], t.detach().numpy(), rtol, f"{name} after step {step + 1}")
    # the state too, under torch's keys
    for name, t in tensors.items():
        torch_state = theirs.state[t]
        mine = ours.state.get(name, {})
        expected_keys = {k for k, v in torch_state.items() if v is not None}
        assert set(mine) == expected_keys
        for key, value in torch_state.items():
            if key == "step":
                assert mine[key] == int(value.item()) == STEPS
            elif value is not None:
                assert_close(mine[key], value.numpy(), rtol, f"{name} state {key}")


def test_grads_are_read_not_written() -> None:
    params = initial_params(np.float64)
    grads = random_grads(np.float64, 1)[0]
    before = {k: g.copy() for k, g in grads.items()}
    for optimizer_cfg in CONFIGS.values():
        build_optimizer(params, optimizer_cfg).step(grads)
        for name, g in grads.items():
            np.testing.assert_array_equal(g, before[name])


@pytest.mark.parametrize("config", EVERYTHING)
def test_float32_stays_float32(config: str) -> None:
    params = initial_params(np.float32)
    optimizer = build_optimizer(params, CONFIGS[config])
    for grads in random_grads(np.float32, 3):
        optimizer.step(grads)
    assert all(p.dtype == np.float32 for p in params.values())
    for st in optimizer.state.values():
        assert all(v.dtype == np.float32 for v in st.values() if isinstance(v, np.ndarray))


@pytest.mark.parametrize("config", EVERYTHING)
def test_step_allocates_no_arrays(config: str) -> None:
    """After the first step (work arrays and state), a step writes everything with out=: no new array memory."""
    params = {"big": np.random.default_rng(0).standard_normal((256, 256))}  # 512 KiB
    grads = {"big": np.random.default_rng(1).standard_normal((256, 256))}
    optimizer = build_optimizer(params, CONFIGS[config])
    optimizer.step(grads)
    tracemalloc.start()
    try:
        optimizer.step(grads)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 16 * 1024


def test_skips_parameters_without_a_gradient_and_rejects_bad_ones() -> None:
    params = initial_params(np.float64)
    frozen = params["bias"].copy()
    optimizer = Adam(params, lr=0.01)
    grads = random_grads(np.float64, 1)[0]
    optimizer.step({"weight_ih": grads["weight_ih"], "bias": None, "embedding": grads["embedding"]})
    np.testing.assert_array_equal(params["bias"], frozen)
    assert set(optimizer.state) == {"weight_ih", "embedding"}
    with pytest.raises(KeyError, match="nope"):
        optimizer.step({"nope": grads["bias"]})
    with pytest.raises(ValueError, match="float32"):
        optimizer.step({"bias": grads["bias"].astype(np.float32)})
    with pytest.raises(ValueError, match="bias"):
        optimizer.step({"bias": grads["bias"][:-1]})


@pytest.mark.parametrize(
    ("cls", "kwargs"),
    [
        (SGD, {"lr": -1.0}),
        (SGD, {"lr": 0.1, "momentum": -0.5}),
        (SGD, {"lr": 0.1, "nesterov": True}),
        (SGD, {"lr": 0.1, "momentum": 0.9, "dampening": 0.1, "nesterov": True}),
        (Adam, {"lr": 0.1, "betas": (1.0, 0.999)}),
        (Adam, {"lr": 0.1, "betas": (0.9, -0.1)}),
        (Adam, {"lr": 0.1, "eps": -1e-8}),
        (Adagrad, {"lr": 0.1, "lr_decay": -0.1}),
        (Adagrad, {"lr": 0.1, "initial_accumulator_value": -1.0}),
        (RMSprop, {"lr": -0.1}),
        (RMSprop, {"lr": 0.1, "alpha": -0.5}),
        (RMSprop, {"lr": 0.1, "eps": -1e-8}),
        (RMSprop, {"lr": 0.1, "momentum": -0.9}),
        (RMSprop, {"lr": 0.1, "weight_decay": -0.01}),
    ],
)
def test_rejects_what_torch_rejects(cls: type[Optimizer], kwargs: dict[str, Any]) -> None:
    torch_cls = getattr(torch.optim, cls.__name__)
    with pytest.raises(ValueError, match=r"Invalid|Nesterov"):
        torch_cls([torch.zeros(2, requires_grad=True)], **kwargs)
    with pytest.raises(ValueError, match=r"Invalid|Nesterov"):
        cls({"w": np.zeros(2)}, **kwargs)


def test_build_optimizer_rejects_an_unknown_name() -> None:
    with pytest.raises(ValueError, match="adamw"):
        build_optimizer(initial_params(np.float64), {"name": "adamw", "lr": 0.1})


# ------------------------------------------------------------------------------------------------ checkpoints
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("config", EVERYTHING)
def test_state_dict_resumes_exactly(config: str, dtype: type) -> None:
    optimizer_cfg = CONFIGS[config]
    grads_at = quadratic(dtype)
    noise = random_grads(dtype, 20, seed=5)

    def grads(step: int, params: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return {name: g + noise[step][name] for name, g in grads_at(step, params).items()}

    straight = initial_params(dtype)
    optimizer = build_optimizer(straight, optimizer_cfg)
    for step in range(20):
        optimizer.step(grads(step, straight))

    first = initial_params(dtype)
    before = build_optimizer(first, optimizer_cfg)
    for step in range(10):
        before.step(grads(step, first))
    saved = pickle.loads(pickle.dumps(before.state_dict()))
    saved_params = {name: p.copy() for name, p in first.items()}
    for step in range(10, 20):  # the saved copy must not follow the live optimizer
        before.step(grads(step, first))

    resumed_params = {name: p.copy() for name, p in saved_params.items()}
    after = build_optimizer(resumed_params, {**optimizer_cfg, "lr": 123.0})  # loading restores the saved lr
    after.load_state_dict(saved)
    assert after.lr == optimizer_cfg["lr"]
    for step in range(10, 20):
        after.step(grads(step, resumed_params))

    for name in straight:
        np.testing.assert_array_equal(first[name], straight[name])
        np.testing.assert_array_equal(resumed_params[name], straight[name])
        for key, value in optimizer.state[name].items():
            np.testing.assert_array_equal(after.state[name][key], value)


def test_state_dict_is_plain_and_checked() -> None:
    params = initial_params(np.float64)
    optimizer = Adam(params, lr=0.01, amsgrad=True)
    optimizer.step(random_grads(np.float64, 1)[0])
    saved = optimizer.state_dict()
    assert saved["optimizer"] == "Adam"
    assert saved["hyperparameters"] == {
        "lr": 0.01,
        "betas": (0.9, 0.999),
        "eps": 1e-8,
        "weight_decay": 0.0,
        "amsgrad": True,
    }
    assert saved["state"]["bias"]["step"] == 1
    assert type(saved["state"]["bias"]["step"]) is int
    assert set(saved["state"]["bias"]) == {"step", "exp_avg", "exp_avg_sq", "max_exp_avg_sq"}
    assert saved["state"]["bias"]["exp_avg"] is not optimizer.state["bias"]["exp_avg"]
    with pytest.raises(ValueError, match="SGD"):
        SGD(params, lr=0.1).load_state_dict(saved)
    with pytest.raises(KeyError, match="bias"):
        Adam({"weight_ih": params["weight_ih"]}, lr=0.01).load_state_dict(saved)
    with pytest.raises(ValueError, match="shape"):
        Adam({**params, "bias": np.zeros(3)}, lr=0.01).load_state_dict(saved)


# --------------------------------------------------------------------------------------------------- clipping
def grad_tensors(grads: dict[str, np.ndarray]) -> list[torch.Tensor]:
    tensors = []
    for g in grads.values():
        t = torch.zeros(g.shape, dtype=torch.from_numpy(g).dtype, requires_grad=True)
        t.grad = torch.from_numpy(g.copy())
        tensors.append(t)
    return tensors


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("norm_type", [2.0, float("inf"), 1.0, 3.0])
@pytest.mark.parametrize("max_norm", [0.5, 1e4])  # below and above the total norm
def test_clip_grad_norm_matches_torch(max_norm: float, norm_type: float, dtype: type) -> None:
    grads = random_grads(dtype, 1, seed=7)[0]
    tensors = grad_tensors(grads)
    expected = torch.nn.utils.clip_grad_norm_(tensors, max_norm, norm_type=norm_type)
    total = clip_grad_norm(grads, max_norm, norm_type=norm_type)
    rtol = 1e-12 if dtype == np.float64 else 1e-6
    assert isinstance(total, float)
    np.testing.assert_allclose(total, expected.item(), rtol=rtol)
    for g, t in zip(grads.values(), tensors, strict=True):
        assert_close(g, t.grad.numpy(), rtol, "clipped gradient")
    assert (total > max_norm) == (max_norm == 0.5)


def test_clip_grad_norm_always_scales_as_torch_does() -> None:
    """A non-finite norm gives coefficient 0 or nan, and torch multiplies regardless: the same gradients here."""
    for poison in (np.inf, np.nan):
        grads = random_grads(np.float64, 1, seed=8)[0]
        grads["bias"][3] = poison
        tensors = grad_tensors(grads)
        expected = torch.nn.utils.clip_grad_norm_(tensors, 1.0)
        total = clip_grad_norm(grads, 1.0)
        np.testing.assert_array_equal(total, expected.item())
        for g, t in zip(grads.values(), tensors, strict=True):
            np.testing.assert_array_equal(g, t.grad.numpy())
        with pytest.raises(RuntimeError, match="non-finite"):
            clip_grad_norm(grads, 1.0, error_if_nonfinite=True)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_clip_grad_value_matches_torch(dtype: type) -> None:
    grads = random_grads(dtype, 1, seed=9)[0]
    grads["bias"][0] = np.nan
    tensors = grad_tensors(grads)
    torch.nn.utils.clip_grad_value_(tensors, 0.25)
    clip_grad_value(grads, 0.25)
    for g, t in zip(grads.values(), tensors, strict=True):
        np.testing.assert_array_equal(g, t.grad.numpy())


@pytest.mark.parametrize(("value", "algorithm"), [(0.3, "norm"), (1e4, "norm"), (0.3, "value"), (0.0, "norm")])
def test_clip_gradients_matches_lightning(value: float, algorithm: str) -> None:
    grads = random_grads(np.float64, 1, seed=10)[0]
    before = {name: g.copy() for name, g in grads.items()}
    tensors = grad_tensors(grads)
    Precision().clip_gradients(torch.optim.SGD(tensors, lr=0.1), value, GradClipAlgorithmType(algorithm))
    total = clip_gradients(grads, value, algorithm.upper())
    for g, t in zip(grads.values(), tensors, strict=True):
        assert_close(g, t.grad.numpy(), 1e-12, "clipped gradient")
    if algorithm == "norm" and value > 0:
        assert total == pytest.approx(float(np.sqrt(sum(np.sum(g**2) for g in before.values()))), rel=1e-12)
    else:
        assert total is None
    if value == 0.0:
        for name, g in grads.items():
            np.testing.assert_array_equal(g, before[name])


def test_clip_gradients_defaults_and_checks() -> None:
    grads = random_grads(np.float64, 1, seed=11)[0]
    reference = {name: g.copy() for name, g in grads.items()}
    assert clip_gradients(grads, None) is None
    assert clip_gradients(grads, 0.2, None) == clip_grad_norm(reference, 0.2)
    for name, g in grads.items():
        np.testing.assert_array_equal(g, reference[name])
    with pytest.raises(ValueError, match="invalid"):
        clip_gradients(grads, 0.2, "max")
