"""rnnlab-gradcheck: check a cell's hand-written NumPy backward, the tool to run before trusting a new cell.

    rnnlab-gradcheck model=lstm model.variant=peephole
    rnnlab-gradcheck plugins=[my_cells] model.cell=my_cell tol=1e-8

For the chosen cell (any registered one, a plug-in's included), in float64, over several shapes (1 to 3 layers, one
or two directions, T = 1 and T = 5, sequences of different lengths, non-zero initial states), the gradients of
L = Σ out ⊙ G + Σ final ⊙ G' that the NumPy backward computes are compared with

* torch autograd on the cell's torch counterpart (torch's fused module, or the reference module running the
  cell's ``torch_step``), for every parameter, the embedding and the initial states;
* central finite differences of the NumPy forward itself (step ``eps``), on a sample of each parameter's entries.

It prints the worst relative error per parameter, max |numpy - reference| / max |reference|, and exits 1 when one
is above ``tol`` (finite differences: ``fd_tol``), naming it. Arguments are key=value pairs, as rnnlab-train's.
"""

from __future__ import annotations

import sys
from typing import Any

DEFAULTS = {"model.cell": "lstm", "model.variant": "standard", "model.nonlinearity": "tanh", "tol": "1e-10",
            "fd_tol": "1e-6", "eps": "1e-6", "hidden_size": "5", "seed": "0", "plugins": ""}  # fmt: skip
ALIASES = {"model": "model.cell", "cell": "model.cell", "variant": "model.variant"}
SHAPES = [(1, False, 5), (2, True, 5), (3, False, 1)]  # (layers, bidirectional, T)


def parse(argv: list[str]) -> dict[str, str]:
    """key=value pairs over DEFAULTS; one readable error for anything else."""
    args = dict(DEFAULTS)
    for arg in argv:
        key, sep, value = arg.partition("=")
        key = ALIASES.get(key.lstrip("+"), key.lstrip("+"))
        if not sep or key not in DEFAULTS:
            raise SystemExit(
                f"rnnlab-gradcheck: error: {arg!r}: expected key=value with key one of {', '.join(DEFAULTS)}"
            )
        args[key] = value.strip().strip("[]")
    return args


def relative(a: Any, b: Any) -> float:
    import numpy as np

    scale = float(np.max(np.abs(b))) if np.size(b) else 0.0
    return float(np.max(np.abs(np.asarray(a) - np.asarray(b)))) / max(scale, 1e-300) if np.size(b) else 0.0


def weighted_sum(net: Any, x: Any, lengths: Any, state: Any, G: Any, Gf: tuple[Any, ...]) -> float:
    """L = Σ out ⊙ G + Σ final ⊙ G' from the NumPy forward."""
    import numpy as np

    out, final, _ = net.forward(x, lengths, state=state)
    finals = final if isinstance(final, tuple) else (final,)
    return float(np.vdot(out, G) + sum(np.vdot(a, b) for a, b in zip(finals, Gf, strict=True)))


def check(cell: str, variant: str, nonlinearity: str, hidden: int, seed: int, eps: float) -> dict[str, list[float]]:
    """{parameter: [worst autograd error, worst finite-difference error]} over SHAPES."""
    import numpy as np
    import torch

    from rnnlab.cells.protocol import cell_class
    from rnnlab.models.init import init_parameters
    from rnnlab.models.numpy.net import NumpyRecurrentNet
    from rnnlab.models.spec import NetSpec
    from rnnlab.models.torch.recurrent import TorchRecurrentNet

    n_states = len(cell_class(cell, variant).states)
    worst: dict[str, list[float]] = {}

    def record(name: str, k: int, err: float) -> None:
        worst.setdefault(name, [0.0, 0.0])[k] = max(worst.get(name, [0.0, 0.0])[k], err)

    rng = np.random.default_rng(seed)
    for layers, bidirectional, T in SHAPES:
        spec = NetSpec(cell, 7, 4, hidden, layers, bidirectional, 3, nonlinearity=nonlinearity, variant=variant)
        net = NumpyRecurrentNet(spec, seed, dtype=np.float64)
        torch_net = TorchRecurrentNet(spec, seed).double()
        torch_net.load_arrays(init_parameters(spec, seed))
        B, D = 3, spec.num_directions
        x = rng.integers(0, 7, (B, T))
        lengths = np.array([T, max(T - 2, 1), 1])
        state0 = tuple(rng.standard_normal((layers * D, B, hidden)) for _ in range(n_states))
        out, final, cache = net.forward(x, lengths, state=state0 if n_states > 1 else state0[0])
        finals = final if isinstance(final, tuple) else (final,)
        G = rng.standard_normal(out.shape)
        Gf = tuple(rng.standard_normal(f.shape) for f in finals)
        net.zero_grad()
        d0 = net.backward(G, Gf if n_states > 1 else Gf[0], cache)
        d0 = d0 if isinstance(d0, tuple) else (d0,)
        # torch autograd on the cell's torch counterpart
        t0 = tuple(torch.tensor(s, requires_grad=True) for s in state0)
        t_out, t_final = torch_net(torch.tensor(x), torch.tensor(lengths), t0 if n_states > 1 else t0[0])
        loss = (t_out * torch.tensor(G)).sum()
        for f, g in zip(t_final if isinstance(t_final, tuple) else (t_final,), Gf, strict=True):
            loss = loss + (f * torch.tensor(g)).sum()
        loss.backward()
        params = dict(torch_net.named_parameters())
        for name, grad in net.grads.items():
            if not name.startswith("head."):
                record(name.removeprefix("rnn."), 0, relative(grad, params[name].grad.numpy()))
        for i, (a, b) in enumerate(zip(d0, t0, strict=True)):
            record(f"initial state {('h', 'c')[i]}", 0, relative(a, b.grad.numpy()))

        # central finite differences of the NumPy forward
        state = state0 if n_states > 1 else state0[0]
        for name, p in net.params.items():
            if name.startswith("head."):
                continue
            picks = rng.choice(p.size, size=min(p.size, 8), replace=False)
            numeric, analytic = [], []
            for flat in picks:
                idx = np.unravel_index(flat, p.shape)
                keep = p[idx]
                p[idx] = keep + eps
                up = weighted_sum(net, x, lengths, state, G, Gf)
                p[idx] = keep - eps
                down = weighted_sum(net, x, lengths, state, G, Gf)
                p[idx] = keep
                numeric.append((up - down) / (2 * eps))
                analytic.append(net.grads[name][idx])
            record(name.removeprefix("rnn."), 1, relative(analytic, numeric))
    return worst


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if any(a in ("-h", "--help") for a in argv):
        print(__doc__)
        return
    args = parse(argv)
    from rnnlab.registry import RegistryError, import_plugins, working_directory_on_path

    working_directory_on_path()  # plug-ins from the working directory, as rnnlab-train
    try:
        import_plugins([p for p in args["plugins"].split(",") if p.strip()])
        from rnnlab.cells.protocol import cell_class

        cell_class(args["model.cell"], args["model.variant"])
    except (RegistryError, Exception) as err:  # an unknown cell or a plug-in that cannot be imported
        raise SystemExit(f"rnnlab-gradcheck: error: {str(err).splitlines()[0]}") from None
    tol, fd_tol = float(args["tol"]), float(args["fd_tol"])
    worst = check(args["model.cell"], args["model.variant"], args["model.nonlinearity"], int(args["hidden_size"]),
                  int(args["seed"]), float(args["eps"]))  # fmt: skip
    label = args["model.cell"] + ("" if args["model.variant"] == "standard" else f"/{args['model.variant']}")
    width = max(len(n) for n in worst)
    print(f"rnnlab-gradcheck {label}: float64, shapes (layers, bidirectional, T) {SHAPES}, variable lengths")
    print(f"{'parameter':<{width}}  {'vs autograd':>12}  {'vs finite diff':>14}")
    bad = []
    for name, (auto, fd) in worst.items():
        fails = auto > tol or fd > fd_tol
        print(f"{name:<{width}}  {auto:>12.2e}  {fd:>14.2e}{'  FAIL' if fails else ''}")
        if fails:
            bad.append(name)
    if bad:
        limits = f"tolerance {tol:g} against autograd, {fd_tol:g} against finite differences"
        print(
            f"rnnlab-gradcheck: error: {label}: the backward of {', '.join(bad)} disagrees ({limits})", file=sys.stderr
        )
        raise SystemExit(1)
    print(f"{label}: every gradient agrees (autograd <= {tol:g}, finite differences <= {fd_tol:g})")


if __name__ == "__main__":
    main()
