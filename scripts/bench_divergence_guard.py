"""What the divergence guard (``rnnlab.callbacks.DivergenceGuard``) costs per training step, on the default char LSTM.

The model is the default job's: embedding 64 -> 1-layer LSTM 256 -> linear head over 80 characters, batch 64,
seq_len 100, Adam, gradient norm clipped at 5, built by ``rnnlab.build.build_task`` from the composed default
config (random token ids stand in for Shakespeare: the cost of a check does not depend on the data).

* torch: the guard's own hooks as Lightning calls them in one optimizer step: ``on_before_backward`` (keeps the
  loss) and ``on_before_optimizer_step`` (total gradient norm with foreach norms, added to the loss, one
  ``isfinite`` test), against one full training step (zero_grad, forward, cross-entropy, backward,
  ``clip_grad_norm_(5)``, Adam step).
* numpy: what the NumPy backend's ``training_step`` adds: finding the guard among the trainer's callbacks and two
  float tests (the loss, and the norm that clipping by norm returns anyway), against one NumPy training step
  (forward, loss, BPTT, ``clip_gradients``, Adam); and ``numpy_grad_norm`` (one ``np.vdot`` per array), which
  runs instead of the free norm when clipping is off or by value.

Each timing is the median of ``--rounds`` blocks of ``--iters`` calls (a block of steps: ``--steps`` steps).

    OMP_NUM_THREADS=1 .venv/bin/python scripts/bench_divergence_guard.py
    .venv/bin/python scripts/bench_divergence_guard.py --backends torch --json outputs/bench_guard.json
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from rnnlab.atomic import write_text


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--backends", default="torch,numpy", help="comma-separated subset of torch, numpy")
    p.add_argument("--vocab", type=int, default=80, help="characters (Shakespeare has 80)")
    p.add_argument("--steps", type=int, default=10, help="training steps per timed block (10)")
    p.add_argument("--iters", type=int, default=2000, help="guard calls per timed block (2000)")
    p.add_argument("--rounds", type=int, default=5, help="timed blocks of each (5)")
    p.add_argument("--json", type=Path, default=None, help="also write the results here")
    p.add_argument("overrides", nargs="*", help="Hydra overrides of the default config, e.g. model.hidden_size=512")
    args = p.parse_args(argv)
    args.backends = [b.strip() for b in args.backends.split(",") if b.strip()]
    if not args.backends or not set(args.backends) <= {"torch", "numpy"}:
        p.error("--backends: choose from torch, numpy")
    return args


def build(backend: str, vocab_size: int, overrides: list[str]) -> tuple[Any, Any]:
    from hydra import compose, initialize_config_dir

    import rnnlab.cli
    from rnnlab.build import build_task
    from rnnlab.data.vocab import CharVocab

    with initialize_config_dir(config_dir=rnnlab.cli.config_dir(), version_base="1.3"):
        cfg = compose("train", overrides=[f"model.backend={backend}", *overrides])
    vocab = CharVocab([chr(32 + i) for i in range(vocab_size)])
    datamodule = SimpleNamespace(vocab=vocab, num_outputs=vocab_size, pad_id=None, input_features=0)
    return cfg, build_task(cfg, datamodule, seed=0)


def fake_trainer(guard: Any) -> Any:
    """What the guard reads from a Trainer, with the default job's seven callbacks to search."""
    others = [object() for _ in range(6)]
    return SimpleNamespace(
        precision_plugin=SimpleNamespace(scaler=None),
        global_step=0,
        current_epoch=0,
        callbacks=[*others[:4], guard, *others[4:]],
        checkpoint_callbacks=[],
        default_root_dir=".",
    )


def median_block(fn: Any, n: int, rounds: int) -> float:
    """Median over ``rounds`` blocks of the mean seconds per call of ``fn`` (n calls a block)."""
    fn()  # warm-up
    times = []
    for _ in range(rounds):
        t0 = time.perf_counter()
        for _ in range(n):
            fn()
        times.append((time.perf_counter() - t0) / n)
    return statistics.median(times)


def bench_torch(args: argparse.Namespace) -> dict[str, float]:
    import torch

    from rnnlab.backends.torch import build_optimizer
    from rnnlab.callbacks import DivergenceGuard

    cfg, task = build("torch", args.vocab, args.overrides)
    b, t = cfg.data.batch_size, cfg.data.seq_len
    gen = torch.Generator().manual_seed(0)
    x = torch.randint(args.vocab, (b, t), generator=gen)
    y = torch.randint(args.vocab, (b, t), generator=gen)
    params = list(task.parameters())
    optimizer = build_optimizer(params, dict(cfg.optimizer))
    clip = float(cfg.trainer.gradient_clip_val)
    state: dict[str, Any] = {}

    def step() -> None:
        optimizer.zero_grad()
        loss, _ = task._loss((x, y))
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, clip)
        optimizer.step()
        state["loss"] = loss

    for _ in range(3):  # oneDNN's first LSTM calls are slow
        step()
    step_s = median_block(step, args.steps, args.rounds)

    guard = DivergenceGuard()
    trainer = fake_trainer(guard)
    loss = state["loss"]

    def check() -> None:
        guard.on_before_backward(trainer, task, loss)
        guard.on_before_optimizer_step(trainer, task, optimizer)

    guard_s = median_block(check, args.iters, args.rounds)
    n_params = sum(p.numel() for p in params)
    return {"step_ms": step_s * 1e3, "guard_us": guard_s * 1e6, "guard_pct": 100 * guard_s / step_s,
            "params": n_params, "arrays": len(params)}  # fmt: skip


def bench_numpy(args: argparse.Namespace) -> dict[str, float]:
    import torch

    from rnnlab.callbacks import DivergenceGuard, divergence_guard, numpy_grad_norm
    from rnnlab.models.numpy.optim import build_optimizer, clip_gradients

    cfg, task = build("numpy", args.vocab, args.overrides)
    b, t = cfg.data.batch_size, cfg.data.seq_len
    gen = torch.Generator().manual_seed(0)
    batch = (torch.randint(args.vocab, (b, t), generator=gen), torch.randint(args.vocab, (b, t), generator=gen))
    net = task.net
    optimizer = build_optimizer(net.params, dict(cfg.optimizer))
    clip = float(cfg.trainer.gradient_clip_val)
    state: dict[str, Any] = {}

    def step() -> None:
        for g in net.grads.values():
            g.fill(0.0)
        loss, _, _ = task.backend.loss_and_backward(task, batch)
        state["norm"] = clip_gradients(net.grads, clip, "norm")
        optimizer.step(net.grads)
        state["loss"] = loss

    step()
    step_s = median_block(step, args.steps, args.rounds)

    guard = DivergenceGuard()
    trainer = fake_trainer(guard)
    loss, norm = float(state["loss"]), float(state["norm"])

    def check() -> None:
        found = divergence_guard(trainer)
        found.check(trainer, "train/loss", loss, 0)
        found.check(trainer, "gradient norm", norm, 0)

    guard_s = median_block(check, args.iters, args.rounds)
    norm_s = median_block(lambda: numpy_grad_norm(net.grads), args.iters // 4 or 1, args.rounds)
    return {"step_ms": step_s * 1e3, "guard_us": guard_s * 1e6, "guard_pct": 100 * guard_s / step_s,
            "grad_norm_us": norm_s * 1e6, "grad_norm_pct": 100 * norm_s / step_s,
            "params": sum(p.size for p in net.params.values()), "arrays": len(net.params)}  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    import torch

    print(f"default char LSTM ({' '.join(args.overrides) or 'no overrides'}), vocabulary {args.vocab}; "
          f"torch {torch.__version__}, {torch.get_num_threads()} thread(s), OMP_NUM_THREADS="
          f"{os.environ.get('OMP_NUM_THREADS', 'unset')}, load average {os.getloadavg()[0]:.2f}")  # fmt: skip
    results: dict[str, Any] = {}
    for backend in args.backends:
        r = bench_torch(args) if backend == "torch" else bench_numpy(args)
        results[backend] = r
        line = (f"{backend:>5}: step {r['step_ms']:8.2f} ms | guard {r['guard_us']:7.2f} us per step "
                f"({r['guard_pct']:.4f} %) | {r['params']:,} parameters in {r['arrays']} arrays")  # fmt: skip
        if "grad_norm_us" in r:
            line += f" | numpy_grad_norm {r['grad_norm_us']:.1f} us ({r['grad_norm_pct']:.3f} %, clipping off/value)"
        print(line, flush=True)
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        write_text(args.json, json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
