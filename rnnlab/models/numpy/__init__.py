"""The NumPy backend: recurrent networks from scratch with hand-written backpropagation through time."""
