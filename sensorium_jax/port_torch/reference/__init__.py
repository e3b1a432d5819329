"""PyTorch modules with the reference implementations' structure and parameter names: the
SENSORIUM 2023 starter kit's factorized baseline (neuralpredictors' factorized core, Gaussian
readout, MLP shifter), its GRU baseline and the first-place DwiseNeuro.

They exist so that checkpoint imports can be tested against the reference's state dicts and so
that `benchmarks/bench_vs_torch.py` can time the same network in PyTorch. They need torch (and
scipy for the GRU's Hermite filters); training, evaluation and inference never import them.
"""
