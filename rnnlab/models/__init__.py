"""Networks. ``spec.NetSpec`` describes one; ``init`` draws its weights; each backend builds it from both."""
