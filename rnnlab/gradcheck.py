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

``scope=network`` checks the whole network of a training config instead:

    rnnlab-gradcheck scope=network task=classify data=imdb model=gru
    rnnlab-gradcheck scope=network task=seq2seq data=dates model.attention=additive model.num_layers=2

Every other key=value is an override of rnnlab-train's, composed into the same config (task, data, model.*,
plugins=[...], experiment=..., seed=...). The task is built as rnnlab-train builds it, once per backend, in float64
(trainer.precision=64) from the same initial weights, with model.dropout off (the backends draw different masks
between layers; variational dropout and zoneout stay on, with the same masks at every evaluation); one
training batch comes from the real data module, with the data's quick-run overrides (data.limit_samples=600, ...)
and data.batch_size=4 unless given. For every parameter (embedding, recurrent stack, head; encoder, decoder,
attention and output layer for seq2seq), the gradient of the task's own loss (its head and objective, through the
NumPy backend's loss_and_backward) is compared with torch autograd on the torch backend's task, and with central
finite differences of the NumPy loss on ``entries`` of its entries (half the largest gradients, half at random).
Keys of its own: ``tol``, ``fd_tol``, ``eps``, ``entries``.
"""

from __future__ import annotations

import sys
from typing import Any

DEFAULTS = {"scope": "cell", "model.cell": "lstm", "model.variant": "standard", "model.nonlinearity": "tanh",
            "tol": "1e-10", "fd_tol": "1e-6", "eps": "1e-6", "hidden_size": "5", "seed": "0",
            "plugins": ""}  # fmt: skip
ALIASES = {"model": "model.cell", "cell": "model.cell", "variant": "model.variant"}
SHAPES = [(1, False, 5), (2, True, 5), (3, False, 1)]  # (layers, bidirectional, T)
SCOPES = ("cell", "network")
# scope=network: the keys of rnnlab-gradcheck itself; every other key=value is one of rnnlab-train's overrides
# eps 1e-4: a whole network's loss sums many terms, and below 1e-4 its rounding error (~1/eps) outweighs the
# truncation error (~eps^2): over the catalogue's tasks the worst error is 5e-8 at 1e-4, 2e-7 at 3e-5, 5e-7 at 1e-5
NETWORK_DEFAULTS = {"scope": "network", "tol": "1e-10", "fd_tol": "1e-6", "eps": "1e-4", "entries": "4"}
NETWORK_BATCH = 4  # data.batch_size unless given
FD_FLOOR = 1e-3  # finite differences: errors relative to at least this share of the network's largest gradient


def error(message: str) -> SystemExit:
    return SystemExit(f"rnnlab-gradcheck: error: {message}")


def scope_of(argv: list[str]) -> str:
    """The value of the last ``scope=`` argument ("cell" without one); one line for an unknown scope."""
    scope = "cell"
    for arg in argv:
        key, sep, value = arg.partition("=")
        if sep and key.lstrip("+") == "scope":
            scope = value.strip()
    if scope not in SCOPES:
        raise error(f"scope={scope}: choose one of {', '.join(SCOPES)}")
    return scope


def parse(argv: list[str]) -> dict[str, str]:
    """key=value pairs over DEFAULTS; one readable error for anything else."""
    args = dict(DEFAULTS)
    for arg in argv:
        key, sep, value = arg.partition("=")
        key = ALIASES.get(key.lstrip("+"), key.lstrip("+"))
        if not sep or key not in DEFAULTS:
            raise error(f"{arg!r}: expected key=value with key one of {', '.join(DEFAULTS)}")
        args[key] = value.strip().strip("[]")
    return args


def parse_network(argv: list[str]) -> tuple[dict[str, str], list[str]]:
    """(rnnlab-gradcheck's own keys over NETWORK_DEFAULTS, rnnlab-train's overrides in their order)."""
    args, overrides = dict(NETWORK_DEFAULTS), []
    for arg in argv:
        key, sep, value = arg.partition("=")
        if not sep or arg.startswith("-"):
            raise error(f"{arg!r}: expected key=value (one of {', '.join(NETWORK_DEFAULTS)}, or an override of "
                        "rnnlab-train's)")  # fmt: skip
        if key in NETWORK_DEFAULTS:
            args[key] = value.strip()
        else:
            overrides.append(arg)
    for key in ("tol", "fd_tol", "eps"):
        try:
            ok = float(args[key]) > 0
        except ValueError:
            ok = False
        if not ok:
            raise error(f"{key}={args[key]}: expected a number > 0")
    if not args["entries"].isdigit() or int(args["entries"]) < 1:
        raise error(f"entries={args['entries']}: expected an integer >= 1")
    return args, overrides


def relative(a: Any, b: Any, floor: float = 0.0) -> float:
    """max |a - b| / max |b| (``floor``: the smallest scale to divide by)."""
    import numpy as np

    scale = max(float(np.max(np.abs(b))) if np.size(b) else 0.0, floor)
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

    state_names = cell_class(cell, variant).states
    n_states = len(state_names)
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
            record(f"initial state {state_names[i]}", 0, relative(a, b.grad.numpy()))

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


# ------------------------------------------------------------------------------------------- scope=network
def compose(overrides: list[str]) -> Any:
    """rnnlab-train's config for ``overrides``, composed from the same conf/ (``hydra.compose``; the hydra node is
    registered, then dropped, as the test suite's compose does)."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from hydra.core.hydra_config import HydraConfig
    from omegaconf import open_dict

    from rnnlab.cli import config_dir

    with initialize_config_dir(config_dir=config_dir(), version_base="1.3"):
        cfg = hydra_compose("train", overrides=list(overrides), return_hydra_config=True)
        HydraConfig.instance().set_config(cfg)
    with open_dict(cfg):
        del cfg.hydra
    return cfg


def network_config(overrides: list[str]) -> tuple[Any, list[str]]:
    """The composed and validated config of the check, and the settings it added to the user's overrides: the
    data's quick-run overrides and data.batch_size (unless given), float64, no dropout."""
    from rnnlab.config import validate
    from rnnlab.registry import DATASETS

    given = {o.partition("=")[0].lstrip("+~") for o in overrides}
    cfg = compose(overrides)
    data = DATASETS.get(str(cfg.data.name)) if str(cfg.data.name) in DATASETS else None
    added = [o for o in (data.meta.get("quick", ()) if data else ()) if o.partition("=")[0] not in given]
    if "data.batch_size" not in given:
        added.append(f"data.batch_size={NETWORK_BATCH}")
    forced = ["trainer.precision=64"]
    if float(cfg.model.dropout) != 0:
        forced.append("model.dropout=0")
    cfg = compose([*added, *overrides, *forced])
    validate(cfg)
    return cfg, [*added, *forced]


def float64_batch(batch: Any) -> Any:
    """Floating tensors of a batch in float64, as Lightning's 64-bit precision hands them to the task."""
    import torch

    def convert(t: Any) -> Any:
        return t.double() if isinstance(t, torch.Tensor) and t.is_floating_point() else t

    return type(batch)(convert(t) for t in batch) if isinstance(batch, tuple | list) else convert(batch)


def build_pair(cfg: Any, seed: int) -> tuple[Any, Any, Any]:
    """(NumPy task, torch task, one float64 training batch): both tasks built by rnnlab.build.build_task from the
    same data module and seed (the same initial weights), each set up as a Trainer sets it up before fitting."""
    from types import SimpleNamespace

    from rnnlab.build import build_task
    from rnnlab.data.datamodules import build_datamodule

    datamodule = build_datamodule(cfg.data, seed, cfg.paths.cache_dir)
    datamodule.prepare_data()
    datamodule.setup("fit")
    batch = float64_batch(next(iter(datamodule.train_dataloader())))
    tasks = []
    for name in ("numpy", "torch"):
        cfg.model.backend = name
        task = build_task(cfg, datamodule, seed)
        task.trainer = SimpleNamespace(datamodule=datamodule, global_step=0)  # what setup() reads of a Trainer
        try:
            task.setup("fit")  # the forecast task reads its series (normalization, residual) from the data
        finally:
            task.trainer = None
        tasks.append(task)
    return tasks[0], tasks[1], batch


def fd_picks(analytic: Any, reference: Any, entries: int, rng: Any) -> Any:
    """Flat indices of ``entries`` entries to differentiate numerically: half the largest |gradients|, the rest at
    random among the other non-zero ones (the gradient of an embedding is zero outside the batch's tokens)."""
    import numpy as np

    flat = np.abs(analytic.reshape(-1)) + np.abs(reference.reshape(-1))
    candidates = np.flatnonzero(flat)
    if candidates.size == 0:
        candidates = np.arange(flat.size)
    if candidates.size <= entries:
        return candidates
    top = candidates[np.argsort(flat[candidates], kind="stable")[::-1][: entries // 2]]
    rest = np.setdiff1d(candidates, top)
    return np.concatenate([top, rng.choice(rest, size=entries - top.size, replace=False)])


def check_network(np_task: Any, torch_task: Any, batch: Any, eps: float, entries: int, seed: int) -> dict[str, Any]:
    """{"loss": (NumPy loss, torch loss), "worst": {parameter: [error against autograd, against finite
    differences]}} for one training batch."""
    import numpy as np

    np_task.begin_training_step(batch, 0)
    torch_task.begin_training_step(batch, 0)
    backend, net = np_task.backend, np_task.net

    def same_masks(*tasks: Any) -> None:
        """Variational dropout and zoneout masks (rnnlab.models.regularisers) the same at every evaluation."""
        for task in tasks:
            if getattr(task.net, "masks", None) is not None:
                task.net.masks.reseed(seed)

    for g in net.grads.values():
        g.fill(0.0)
    same_masks(np_task, torch_task)
    np_loss, _, _ = backend.loss_and_backward(np_task, batch)
    grads = {name: np.array(g, copy=True) for name, g in net.grads.items()}
    torch_loss, _, _ = torch_task.backend.training_step(torch_task, batch, 0)
    torch_loss.backward()
    reference = {}
    for name, p in torch_task.net.named_parameters():
        reference[name] = np.zeros(tuple(p.shape)) if p.grad is None else p.grad.detach().double().numpy()
    missing = sorted(set(grads) ^ set(reference))
    if missing:
        raise RuntimeError(f"the backends' networks differ in their parameters: {', '.join(missing)}")

    rng = np.random.default_rng(seed)
    # A central difference of a loss L carries an absolute rounding error of about u |L| / eps (u the unit roundoff,
    # times the terms L sums) whatever the size of the gradient: a parameter whose gradient is nearly zero (a balanced
    # classifier's output bias) is measured against FD_FLOOR times the largest gradient of the network instead.
    floor = FD_FLOOR * max(float(np.max(np.abs(g))) for g in grads.values())
    worst: dict[str, list[float]] = {}
    for name, p in net.params.items():
        analytic = grads[name]
        picks = fd_picks(analytic, reference[name], entries, rng)
        numeric = []
        for flat in picks:
            idx = np.unravel_index(flat, p.shape)
            keep = p[idx]
            p[idx] = keep + eps
            same_masks(np_task)
            up = backend.loss(np_task, batch)
            p[idx] = keep - eps
            same_masks(np_task)
            down = backend.loss(np_task, batch)
            p[idx] = keep
            numeric.append((up - down) / (2 * eps))
        worst[name] = [relative(analytic, reference[name]), relative(analytic.reshape(-1)[picks], numeric, floor)]
    return {"loss": (float(np_loss), float(torch_loss.detach())), "worst": worst}


def report(label: str, worst: dict[str, list[float]], tol: float, fd_tol: float, forward: str = "") -> None:
    """The table of worst relative errors; exit 1 naming the parameters above tolerance (``forward``: a
    disagreement of the forward pass to name first)."""
    width = max(len("parameter"), *(len(n) for n in worst))
    print(f"{'parameter':<{width}}  {'vs autograd':>12}  {'vs finite diff':>14}")
    bad = []
    for name, (auto, fd) in worst.items():
        fails = not (auto <= tol and fd <= fd_tol)  # a nan fails too
        print(f"{name:<{width}}  {auto:>12.2e}  {fd:>14.2e}{'  FAIL' if fails else ''}")
        if fails:
            bad.append(name)
    limits = f"tolerance {tol:g} against autograd, {fd_tol:g} against finite differences"
    problems = [forward] if forward else []
    if bad:
        problems.append(f"the backward of {', '.join(bad)} disagrees ({limits})")
    if problems:
        print(f"rnnlab-gradcheck: error: {label}: {'; '.join(problems)}", file=sys.stderr)
        raise SystemExit(1)
    print(f"{label}: every gradient agrees (autograd <= {tol:g}, finite differences <= {fd_tol:g})")


def main_network(argv: list[str]) -> None:
    """``rnnlab-gradcheck scope=network <rnnlab-train overrides>``."""
    import secrets

    from rnnlab.cli import load_plugins, plugins_in
    from rnnlab.errorlines import one_line_error

    args, overrides = parse_network(argv)
    from rnnlab.registry import working_directory_on_path

    working_directory_on_path()  # plug-ins from the working directory, as rnnlab-train
    try:
        load_plugins(plugins_in(overrides))
        cfg, added = network_config(overrides)
        import lightning as L

        seed = int(cfg.seed) if cfg.seed is not None else secrets.randbelow(2**31)
        L.seed_everything(seed, workers=True, verbose=False)
        np_task, torch_task, batch = build_pair(cfg, seed)
    except Exception as err:  # a bad override, value or data file: one line, as rnnlab-train prints it
        line = one_line_error(err)
        if line is None:
            raise
        raise error(line) from None
    result = check_network(np_task, torch_task, batch, float(args["eps"]), int(args["entries"]), seed)
    tol, fd_tol = float(args["tol"]), float(args["fd_tol"])
    spec = np_task.spec
    model = str(cfg.model.cell) + ("" if str(cfg.model.variant) == "standard" else f"/{cfg.model.variant}")
    if str(cfg.model.get("attention", "none")) != "none":
        model += f" attention={cfg.model.attention}"
    label = f"{cfg.task.name} on data={cfg.data.name}, model={model}"
    layers = f"{spec.num_layers} layer{'s' if spec.num_layers > 1 else ''}"
    directions = ", bidirectional" if getattr(spec, "bidirectional", False) else ""
    print(f"rnnlab-gradcheck {label}: float64, {layers}{directions}, one training batch (inputs "
          f"{list(np_task.net_inputs(batch)[0].shape)}), seed {seed}; settings added: {' '.join(added)}")  # fmt: skip
    np_loss, torch_loss = result["loss"]
    loss_error = abs(np_loss - torch_loss) / max(abs(torch_loss), 1e-300)
    print(f"loss: numpy {np_loss:.12g}, torch {torch_loss:.12g} (relative difference {loss_error:.2e})"
          f"{'' if loss_error <= tol else '  FAIL'}")  # fmt: skip
    forward = "" if loss_error <= tol else f"the loss disagrees (relative difference {loss_error:.2e} > {tol:g})"
    report(label, result["worst"], tol, fd_tol, forward)


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if any(a in ("-h", "--help") for a in argv):
        print(__doc__)
        return
    if scope_of(argv) == "network":
        main_network(argv)
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
    print(f"rnnlab-gradcheck {label}: float64, shapes (layers, bidirectional, T) {SHAPES}, variable lengths")
    report(label, worst, tol, fd_tol)


if __name__ == "__main__":
    main()
