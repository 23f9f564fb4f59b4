"""rnnlab's Hydra plugin: ``hydra/sweeper=optuna_pruning``, the Optuna sweeper with a pruner.

Hydra instantiates sweepers only from the ``hydra_plugins`` namespace package, and imports every module in it
when it starts, so this package stays thin: the work is in rnnlab.runtime.optuna_sweeper and
rnnlab.runtime.pruning, imported when the sweeper is made.
"""
