"""The recurrent cells, one module each, registered by name (and variant) in ``rnnlab.registry.CELLS``.

``protocol.py`` says what a cell is; ``rnn.py``, ``lstm.py``, ``gru.py`` are the optimised built-ins (torch's fused
modules are their torch counterparts); ``reference/`` holds plain versions of them written to be read against the
equations. Importing this package imports NumPy only.
"""
