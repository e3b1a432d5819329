"""Forward and forward + backward time of the factorized baseline's layers and readout in each
form `model.kernels` can take, next to the PyTorch reference's modules (torch optional).

    python benchmarks/layer_forms.py                 # 2 clips x 80 frames, 8,000 neurons
    python benchmarks/layer_forms.py --clips 1 --no-torch

The layer shapes are the competition core's (11 x 11 then 5 x 5 spatial, 11 then 5 frames
temporal, 32/64/128 channels, on 36 x 64 frames with the 3 input channels of video and
behaviour); the first spatial layer takes only its kernel gradient, as in training. Each
figure is the minimum of `--repeats` runs after one compiling run: XLA's own 2D convolution
(the frames folded into the batch; temporal ones over (T, H*W)), its 3D convolution, and the
form "folded" picks (`kernels.factorized_conv`). docs/PERFORMANCE.md quotes this script.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

import jax
import jax.numpy as jnp

from sensorium_jax.models import kernels
from sensorium_jax.models.readouts import sample_and_weigh

# (name, input [T, H, W, C] per clip, 3D kernel shape); valid convolutions, as the baseline's
LAYERS = (
    ("spatial 11x11, 3->32", (80, 36, 64, 3), (1, 11, 11, 3, 32)),
    ("temporal 11, 32->32", (80, 26, 54, 32), (11, 1, 1, 32, 32)),
    ("spatial 5x5, 32->64", (70, 26, 54, 32), (1, 5, 5, 32, 64)),
    ("temporal 5, 64->64", (70, 22, 50, 64), (5, 1, 1, 64, 64)),
    ("spatial 5x5, 64->128", (66, 22, 50, 64), (1, 5, 5, 64, 128)),
    ("temporal 5, 128->128", (66, 18, 46, 128), (5, 1, 1, 128, 128)),
)
FEATURES = (62, 18, 46, 128)  # the core's output per clip: the readout's input


def best_time(fn: Callable, *args, repeats: int) -> float:
    jax.block_until_ready(fn(*args))
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        jax.block_until_ready(fn(*args))
        times.append(time.perf_counter() - start)
    return min(times)


def xla_2d(x: jax.Array, kernel: jax.Array) -> jax.Array:
    """XLA's own 2D convolution: frames folded into the batch, or (kt, 1) over (T, H*W)."""
    if kernel.shape[0] == 1:
        b, t, h, w, c = x.shape
        y = jax.lax.conv_general_dilated(x.reshape(b * t, h, w, c), kernel[0], (1, 1), "VALID",
                                         dimension_numbers=("NHWC", "HWIO", "NHWC"))
        return y.reshape(b, t, *y.shape[1:])
    return kernels.temporal_conv_folded(x, kernel)


FORMS: dict[str, Callable[[jax.Array, jax.Array], jax.Array]] = {
    "XLA 2D": xla_2d,
    "XLA 3D": kernels.conv3d,
    "folded": lambda x, k: kernels.factorized_conv(x, k, "folded"),
}


def time_layer(form: Callable, x: jax.Array, kernel: jax.Array, first: bool, repeats: int) -> tuple[float, float]:
    loss = lambda x, k: jnp.sum(form(x, k) ** 2)  # noqa: E731
    gradient = jax.grad(loss, argnums=(1,) if first else (0, 1))
    return (best_time(jax.jit(form), x, kernel, repeats=repeats),
            best_time(jax.jit(gradient), x, kernel, repeats=repeats))


def torch_layer_times(clips: int, repeats: int) -> list[tuple[float, float]]:
    import torch

    out = []
    for i, (_, shape, kernel) in enumerate(LAYERS):
        t, h, w, c = shape
        kt, kh, kw, ci, co = kernel
        conv = torch.nn.Conv3d(ci, co, (kt, kh, kw), bias=False)
        x = torch.randn(clips, c, t, h, w, requires_grad=i > 0)

        def forward():
            with torch.no_grad():
                conv(x)

        def both():
            conv.zero_grad()
            (conv(x) ** 2).sum().backward()

        out.append(tuple(min(_timed(f) for _ in range(repeats + 1)) for f in (forward, both)))
    return out


def torch_readout_times(clips: int, neurons: int, repeats: int) -> tuple[float, float]:
    """The reference readout's sampling: grid_sample (bilinear, zeros outside, align_corners)
    of every frame at one position per neuron, times the feature weights, summed."""
    import torch
    import torch.nn.functional as F

    t, h, w, c = FEATURES
    features = torch.randn(clips * t, c, h, w, requires_grad=True)
    grid = (torch.rand(clips * t, neurons, 1, 2) * 2 - 1).requires_grad_(True)
    weights = torch.randn(1, c, neurons, requires_grad=True)

    def readout():
        return (F.grid_sample(features, grid, align_corners=True).squeeze(-1) * weights).sum(1)

    def forward():
        with torch.no_grad():
            readout()

    def both():
        (readout() ** 2).sum().backward()

    return tuple(min(_timed(f) for _ in range(repeats + 1)) for f in (forward, both))


def _timed(fn: Callable[[], None]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clips", type=int, default=2)
    parser.add_argument("--neurons", type=int, default=8000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--no-torch", action="store_true", help="leave out the PyTorch column")
    args = parser.parse_args()

    # JAX first: PyTorch's idle worker threads keep spinning for a while after its work
    keys = jax.random.split(jax.random.key(0), 2 * len(LAYERS))
    rows = []
    for i, (_, shape, kernel_shape) in enumerate(LAYERS):
        x = jax.random.normal(keys[2 * i], (args.clips, *shape))
        kernel = 0.1 * jax.random.normal(keys[2 * i + 1], kernel_shape)
        rows.append([time_layer(form, x, kernel, i == 0, args.repeats) for form in FORMS.values()])
    torch_times = None if args.no_torch else torch_layer_times(args.clips, args.repeats)
    header = [*FORMS, *(["PyTorch Conv3d"] if torch_times else [])]
    print(f"{args.clips} clips, seconds forward / forward + backward (min of {args.repeats}), jax {jax.__version__}")
    print("| layer | " + " | ".join(header) + " |")
    print("|---" * (len(header) + 1) + "|")
    for i, ((name, _, _), cells) in enumerate(zip(LAYERS, rows)):
        cells = cells + ([torch_times[i]] if torch_times else [])
        print(f"| {name} | " + " | ".join(f"{f:.3f} / {b:.3f}" for f, b in cells) + " |", flush=True)

    features = jax.random.normal(keys[0], (args.clips, *FEATURES))
    grid = jax.random.uniform(keys[1], (args.clips, FEATURES[0], args.neurons, 2), minval=-1.0, maxval=1.0)
    weights = jax.random.normal(keys[2], (args.clips, args.neurons, FEATURES[-1]))
    readout = lambda f, g, w: sample_and_weigh(f, g, w, 1024)  # noqa: E731 - the config's neuron_chunk
    gradient = jax.grad(lambda f, g, w: jnp.sum(readout(f, g, w) ** 2), argnums=(0, 1, 2))
    ours = [best_time(jax.jit(fn), features, grid, weights, repeats=args.repeats) for fn in (readout, gradient)]
    reference = "" if args.no_torch else \
        " (PyTorch grid_sample: {:.3f} / {:.3f} s)".format(*torch_readout_times(args.clips, args.neurons, args.repeats))
    print(f"Gaussian readout, {args.neurons} neurons: forward / forward + backward "
          f"{ours[0]:.3f} / {ours[1]:.3f} s{reference}")


if __name__ == "__main__":
    main()
