"""Reference recurrent cells: plain NumPy versions of torch's nn.RNN, nn.LSTM and nn.GRU (one layer, one direction),
written to be read against the equations in the style of Karpathy's min-char-rnn.

Each module (``rnn``, ``lstm``, ``gru``) has ``forward`` and ``backward`` (and ``lstm`` and ``gru`` ``internals``: the
gate activations, and the LSTM's cell states, that a forward pass kept) and nothing else; the tests hold them equal
to torch's autograd and to the optimised cells, and docs/cells.md explains the optimisations as the difference.
This package imports nothing and registers nothing: it is for reading, not for running models.
"""
