"""The papers' experiments on one city: the benchmark, ablations, transfer, MSD sweeps and caption quality."""
