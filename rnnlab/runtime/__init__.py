"""What keeps runs safe and moves them to more processes: run-directory ownership, the signal contract.

Light imports only: the Hydra callbacks of this package run on every start, before torch is loaded.
"""
