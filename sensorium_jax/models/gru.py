"""The SENSORIUM 2023 GRU baseline: per-frame 2D conv core, convolutional GRU, Gaussian readout.

Every frame goes through the same 2D convolutional core (no temporal kernels); a convolutional
GRU then integrates the feature maps over time, and the Gaussian readout, the eye-position
shifter and the ELU + 1 output are those of the factorized baseline.

Difference from the original: its core is rotation-equivariant (8 channels x 8 rotations = 64
feature maps per layer); this one is a plain 2D convolutional core with 64 channels, so the
layer sizes match but the weights are not shared across rotations.

The model is causal (frames are processed independently, then the GRU only looks back from a
zero state), so it predicts every frame of a clip: `frames_lost(T) == 0`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import jax
import jax.numpy as jnp
import ml_collections
from flax import nnx

from sensorium_jax.data.card import DatasetCard
from sensorium_jax.models.cores import lecun_normal
from sensorium_jax.models.factorized import core_input, pool_frames, readout_and_shifter
from sensorium_jax.models.registry import register_model

_DN2 = ("NHWC", "HWIO", "NHWC")


def gru_config() -> ml_collections.ConfigDict:
    """Competition-scale configuration of the GRU baseline (T frames in -> T out)."""
    return ml_collections.ConfigDict(
        {
            "name": "gru",
            # Convolutions run in this dtype; parameters, BatchNorm and the GRU state stay float32.
            "compute_dtype": "float32",  # or "bfloat16"
            "core": {
                "channels": (64, 64, 64, 64),  # one entry per layer
                "input_kernel": 9,  # first layer's spatial kernel
                "hidden_kernel": 7,  # every later layer's spatial kernel
                "bn_momentum": 0.9,  # flax convention (torch's momentum 0.1)
                # Spatial average pooling of the input frames (see factorized_config).
                "input_pool": 1,
                # "SAME" as in the baseline, whose core pads: unpadded, four layers of 9/7/7/7
                # kernels would crop 26 pixels off the height and width of a 36 x 64 frame
                # (10 x 38 left), and the receptive fields near the screen edges would fall off
                # the feature map. "VALID" crops.
                "spatial_padding": "SAME",
            },
            # The GRU's convolutions are always zero-padded ("SAME"): the recurrent one must map
            # the state onto a state of the same size.
            "gru": {
                "channels": 64,
                "input_kernel": 9,
                "recurrent_kernel": 9,
                # How the recurrent convolutions run: "native" (XLA's convolution), "patches"
                # (a matrix product of shifted copies: faster on CPU) or "auto" (patches on
                # CPU only). Both compute the same sums with the same kernels.
                "recurrent_conv": "auto",
            },
            "inputs": {
                "behavior": True,  # behaviour as extra constant input channels
                "pupil_center": False,  # pupil center as two more constant channels
                # Constant maps are multiplied by this before the first convolution; "auto":
                # 1 / k^2 for a first kernel of k x k (why: see FactorizedModel).
                "map_scale": "auto",
            },
            "readout": {
                "position_inputs": 2,
                "position_hidden": 30,
                "init_sigma": 0.1,
                "full_sigma": True,
                "neuron_chunk": 1024,
                "centered_positions": True,
            },
            "shifter": {"enabled": True, "hidden": (5, 5), "zero_init": True},
        }
    )


def _padding(kernel: int, padding: str) -> list[tuple[int, int]] | str:
    if padding == "VALID":
        return "VALID"
    if padding != "SAME":
        raise ValueError(f"spatial padding must be 'VALID' or 'SAME', got {padding!r}")
    return [((kernel - 1) // 2, kernel // 2)] * 2


def conv2d(x: jax.Array, kernel: jax.Array, padding: str = "SAME") -> jax.Array:
    """2D convolution of [N, H, W, Ci] by a [k, k, Ci, Co] kernel, stride 1."""
    return jax.lax.conv_general_dilated(
        x, kernel, (1, 1), _padding(kernel.shape[0], padding), dimension_numbers=_DN2
    )


def conv2d_patches(x: jax.Array, kernel: jax.Array) -> jax.Array:
    """The zero-padded ("SAME") `conv2d` as one matrix product of k^2 shifted copies of x.

    Why: inside the GRU's scan XLA's CPU convolutions of small states are slow; measured here
    (2 busy CPU cores, 8 states of 18 x 32, 24 steps, forward + backward of the recurrence):
    8 channels 0.31 s vs 0.99 s, 16 channels 0.59 s vs 3.2 s.
    """
    k = kernel.shape[0]
    (top, bottom), (left, right) = _padding(k, "SAME")
    h, w = x.shape[1:3]
    xp = jnp.pad(x, ((0, 0), (top, bottom), (left, right), (0, 0)))
    patches = jnp.concatenate([xp[:, i : i + h, j : j + w] for i in range(k) for j in range(k)], axis=-1)
    return patches @ kernel.reshape(-1, kernel.shape[-1])


def resolve_recurrent_conv(impl: str) -> str:
    """'auto': matrix products of patches on CPU, the native convolution elsewhere."""
    if impl == "auto":
        return "patches" if jax.default_backend() == "cpu" else "native"
    if impl not in ("native", "patches"):
        raise ValueError(f"recurrent_conv must be 'auto', 'native' or 'patches', got {impl!r}")
    return impl


def frames_folded(fn: Callable[[jax.Array], jax.Array], x: jax.Array) -> jax.Array:
    """Applies a per-image `fn` to [B, T, H, W, C] with the frames folded into the batch."""
    b, t = x.shape[:2]
    y = fn(x.reshape(b * t, *x.shape[2:]))
    return y.reshape(b, t, *y.shape[1:])


class FrameConvLayer(nnx.Module):
    """2D conv (no bias: BatchNorm's shift absorbs it), BatchNorm, ELU on [N, H, W, C]."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel: int,
        *,
        compute_dtype: jnp.dtype = jnp.float32,
        bn_momentum: float = 0.9,
        padding: str = "SAME",
        rngs: nnx.Rngs,
    ):
        self.kernel = nnx.Param(lecun_normal()(rngs.params(), (kernel, kernel, in_channels, out_channels)))
        self.norm = nnx.BatchNorm(out_channels, momentum=bn_momentum, epsilon=1e-5, rngs=rngs)
        self.compute_dtype = compute_dtype
        self.padding = padding

    def __call__(self, x: jax.Array, *, train: bool) -> jax.Array:
        dt = self.compute_dtype
        y = conv2d(x.astype(dt), self.kernel[...].astype(dt), self.padding)
        y = self.norm(y.astype(jnp.float32), use_running_average=not train)
        return jax.nn.elu(y)


class FrameCore(nnx.Module):
    """Per-frame 2D conv stack: [B, T, H, W, Cin] -> [B, T, H', W', C_last], frames independent."""

    def __init__(
        self,
        in_channels: int,
        channels: Sequence[int],
        input_kernel: int,
        hidden_kernel: int,
        *,
        compute_dtype: str | jnp.dtype = "float32",
        bn_momentum: float = 0.9,
        spatial_padding: str = "SAME",
        rngs: nnx.Rngs,
    ):
        _padding(1, spatial_padding)  # fail early on a bad name
        if not channels:
            raise ValueError("the core needs at least one layer")
        dtype = jnp.dtype(compute_dtype)
        ins = (in_channels, *channels[:-1])
        kernels = (input_kernel, *(hidden_kernel,) * (len(channels) - 1))
        self.layers = nnx.List(
            [
                FrameConvLayer(
                    ci, co, k, compute_dtype=dtype, bn_momentum=bn_momentum,
                    padding=spatial_padding, rngs=rngs,
                )
                for ci, co, k in zip(ins, channels, kernels)
            ]
        )
        self.out_channels = int(channels[-1])

    def __call__(self, x: jax.Array, *, train: bool) -> jax.Array:
        def run(images: jax.Array) -> jax.Array:
            for layer in self.layers:
                images = layer(images, train=train)
            return images

        return frames_folded(run, x)


class ConvGRU(nnx.Module):
    """Convolutional GRU over time: [B, T, H, W, Cin] -> hidden states [B, T, H, W, C].

    As the convolutional GRU cell of the baseline: update z and reset r gates from
    conv_x(x_t) + conv_h(h); candidate n = tanh(conv_x(x_t) + conv_h(r * h));
    h_t = (1 - z) * h + z * n, from h = 0. The input convolutions of all frames run at once
    before the scan (one large convolution instead of T small ones); only the recurrent ones
    run inside it. The state stays float32.
    """

    def __init__(
        self,
        in_channels: int,
        channels: int,
        input_kernel: int,
        recurrent_kernel: int,
        *,
        compute_dtype: str | jnp.dtype = "float32",
        recurrent_conv: str = "auto",
        rngs: nnx.Rngs,
    ):
        resolve_recurrent_conv(recurrent_conv)  # fail early on a bad name
        init = lecun_normal()
        c = int(channels)
        # Input convolution: [update | reset | candidate] in one kernel, with their biases.
        self.input_kernel = nnx.Param(init(rngs.params(), (input_kernel, input_kernel, in_channels, 3 * c)))
        self.bias = nnx.Param(jnp.zeros((3 * c,), jnp.float32))
        # Recurrent convolutions: gates on h, candidate on r * h (so two convolutions per step).
        self.gate_kernel = nnx.Param(init(rngs.params(), (recurrent_kernel, recurrent_kernel, c, 2 * c)))
        self.candidate_kernel = nnx.Param(init(rngs.params(), (recurrent_kernel, recurrent_kernel, c, c)))
        self.channels = c
        self.compute_dtype = jnp.dtype(compute_dtype)
        self.recurrent_conv = recurrent_conv

    def __call__(self, x: jax.Array) -> jax.Array:
        dt, c = self.compute_dtype, self.channels
        wx = self.input_kernel[...].astype(dt)
        gx = frames_folded(lambda im: conv2d(im.astype(dt), wx), x).astype(jnp.float32) + self.bias[...]
        wg = self.gate_kernel[...].astype(dt)
        wc = self.candidate_kernel[...].astype(dt)
        conv = conv2d_patches if resolve_recurrent_conv(self.recurrent_conv) == "patches" else conv2d

        def step(h: jax.Array, gx_t: jax.Array) -> tuple[jax.Array, jax.Array]:
            gates = jax.nn.sigmoid(gx_t[..., : 2 * c] + conv(h.astype(dt), wg).astype(jnp.float32))
            z, r = gates[..., :c], gates[..., c:]
            n = jnp.tanh(gx_t[..., 2 * c :] + conv((r * h).astype(dt), wc).astype(jnp.float32))
            h = (1.0 - z) * h + z * n
            return h, h

        b, _, hh, ww, _ = gx.shape
        h0 = jnp.zeros((b, hh, ww, c), jnp.float32)
        _, hs = jax.lax.scan(step, h0, jnp.moveaxis(gx, 1, 0))  # [T, B, H, W, C]
        return jnp.moveaxis(hs, 0, 1)


class GRUModel(nnx.Module):
    """`model(batch, train)` -> positive rates [B, T, Nmax] (every frame, causal)."""

    def __init__(self, config: ml_collections.ConfigDict, card: DatasetCard, *, rngs: nnx.Rngs):
        if card.kind != "video":
            raise ValueError(f"the GRU model needs video data, the card says {card.kind!r}")
        cc, gc, inputs = config.core, config.gru, config.inputs
        in_channels = 1 + card.behavior_dim * bool(inputs.behavior) + 2 * bool(inputs.pupil_center)
        self.use_behavior = bool(inputs.behavior)
        self.use_pupil = bool(inputs.pupil_center)
        self.input_pool = int(cc.get("input_pool", 1))
        # Constant behaviour maps meet k^2 redundant taps of the first kernel (see FactorizedModel).
        scale = inputs.get("map_scale", "auto")
        self.map_scale = 1.0 / cc.input_kernel**2 if scale == "auto" else float(scale)
        self.core = FrameCore(
            in_channels,
            tuple(cc.channels),
            int(cc.input_kernel),
            int(cc.hidden_kernel),
            compute_dtype=config.compute_dtype,
            bn_momentum=cc.bn_momentum,
            spatial_padding=cc.get("spatial_padding", "SAME"),
            rngs=rngs,
        )
        self.gru = ConvGRU(
            self.core.out_channels,
            int(gc.channels),
            int(gc.input_kernel),
            int(gc.recurrent_kernel),
            compute_dtype=config.compute_dtype,
            recurrent_conv=gc.get("recurrent_conv", "auto"),
            rngs=rngs,
        )
        # assigned once: NNX makes an attribute first set to None static
        self.readout, self.shifter = readout_and_shifter(config, card, int(gc.channels), rngs)

    def frames_lost(self, frames: int | None = None) -> int:
        """No frame is lost: the GRU starts from a zero state and predicts every frame."""
        return 0

    def frames_out(self, frames: int) -> int:
        return frames

    def __call__(self, batch: Mapping[str, jax.Array], train: bool = False) -> jax.Array:
        x = pool_frames(core_input(batch, self.use_behavior, self.use_pupil, self.map_scale), self.input_pool)
        features = self.gru(self.core(x, train=train))
        mouse = jnp.asarray(batch["mouse"], jnp.int32)
        shift = None
        if self.shifter is not None:
            shift = self.shifter(jnp.asarray(batch["pupil_center"]), mouse)
        return jax.nn.elu(self.readout(features, mouse, shift, train=train)) + 1.0


@register_model("gru", default_config=gru_config)
def build_gru(config: ml_collections.ConfigDict, card: DatasetCard, rngs: nnx.Rngs) -> GRUModel:
    return GRUModel(config, card, rngs=rngs)
