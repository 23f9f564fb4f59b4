"""``python -m rnnlab ARGS`` is ``rnnlab-train ARGS``; for launchers that start a module, such as
``torchrun --standalone --nproc-per-node=2 -m rnnlab trainer=ddp ...``."""

from rnnlab.cli import train_main

train_main()
