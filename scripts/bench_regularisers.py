"""What variational dropout and zoneout inside the recurrence cost per training step, on both backends.

One forward and backward step of a one-layer network (embedding -> cell -> outputs, loss sum(out)), plain against
``model.recurrent_dropout=0.25 model.zoneout=0.1`` (rnnlab/models/regularisers.py): the NumPy backend then runs its
cell step by step (rnnlab/models/numpy/stepped.py), the torch backend the cell's reference module instead of its
fused kernel. The calls alternate (NumPy, torch) after one warm-up call each; medians of ``--repeats``.

    .venv/bin/python scripts/bench_regularisers.py
    .venv/bin/python scripts/bench_regularisers.py --cells lstm,gru,lstm/peephole --batch 64 --length 100
"""

from __future__ import annotations

import argparse
import os
import time


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cells", default="lstm,gru", help="comma-separated cell or cell/variant names")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--length", type=int, default=50)
    parser.add_argument("--hidden", type=int, default=128)
    parser.add_argument("--embed", type=int, default=32)
    parser.add_argument("--vocab", type=int, default=60)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--threads", type=int, default=1, help="torch and BLAS threads")
    args = parser.parse_args(argv)
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[var] = str(args.threads)

    import numpy as np
    import torch

    from rnnlab.models.numpy.net import NumpyRecurrentNet
    from rnnlab.models.spec import NetSpec
    from rnnlab.models.torch.recurrent import TorchRecurrentNet

    torch.set_num_threads(args.threads)
    x = np.random.default_rng(0).integers(0, args.vocab, (args.batch, args.length))
    xt = torch.as_tensor(x)

    def numpy_step(net: NumpyRecurrentNet) -> None:
        out, _, cache = net.forward(x, train=True)
        net.backward(np.ones_like(out), None, cache)

    def torch_step(net: TorchRecurrentNet) -> None:
        out, _ = net(xt)
        out.sum().backward()

    print(f"B={args.batch} T={args.length} H={args.hidden} embedding {args.embed}, float32, {args.threads} thread(s), "
          f"median of {args.repeats} after a warm-up; ms per training step")  # fmt: skip
    print("| cell | numpy plain | numpy regularised | torch plain (fused) | torch regularised (reference) |")
    print("|---|---|---|---|---|")
    for name in args.cells.split(","):
        cell, _, variant = name.strip().partition("/")
        row = []
        for regs in ({}, {"recurrent_dropout": 0.25, "zoneout": 0.1}):
            sizes = {"vocab_size": args.vocab, "embed_dim": args.embed, "hidden_size": args.hidden}
            spec = NetSpec(cell, **sizes, num_layers=1, bidirectional=False, num_outputs=args.vocab,
                           variant=variant or "standard", **regs)  # fmt: skip
            numpy_net, torch_net = NumpyRecurrentNet(spec, 0, np.float32), TorchRecurrentNet(spec, 0).train()
            numpy_step(numpy_net)
            torch_step(torch_net)
            times: dict[str, list[float]] = {"numpy": [], "torch": []}
            for _ in range(args.repeats):
                start = time.perf_counter()
                numpy_step(numpy_net)
                times["numpy"].append(time.perf_counter() - start)
                start = time.perf_counter()
                torch_step(torch_net)
                times["torch"].append(time.perf_counter() - start)
            row.append({k: float(np.median(v)) * 1e3 for k, v in times.items()})
        plain, regularised = row
        print(f"| {name} | {plain['numpy']:.1f} | {regularised['numpy']:.1f} | {plain['torch']:.1f} | "
              f"{regularised['torch']:.1f} |")  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
