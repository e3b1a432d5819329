"""The SENSORIUM 2023 GRU baseline: per-frame 2D core, convolutional GRU, Gaussian readout.

Every frame goes through the same 2D core (no temporal kernels); a convolutional GRU then
integrates the feature maps over time, and the Gaussian readout, the eye-position shifter and
the ELU + 1 output are those of the factorized baseline.

The core (`core.type`) is the baseline's rotation-equivariant one by default
(`models.rotation_equivariant`: 8 channels x 8 rotations = 64 maps, 4 layers, an unpadded 9x9
input kernel then zero-padded 7x7 kernels, Hermite filters shared across rotations, its Laplace
and group-sparsity regularisers in `regularizer()`); "plain" is a 2D convolutional core with
one free kernel per channel (faster on CPU; every config saved before `core.type` existed
builds it, see `models.legacy`).

Differences from the original that remain: constant input maps (behaviour, pupil centre) are
scaled by `inputs.map_scale` ("auto": 1 / k^2; the reference feeds them unscaled: set it to
1.0 to match); BatchNorm keeps the biased running variance (the reference the unbiased one).
The GRU has one bias per gate where the reference has one on each of a gate's two
convolutions: their sum, since both are added before the gate's nonlinearity.

The model is causal (frames are processed independently, then the GRU only looks back from a
zero state), so it predicts every frame of a clip: `frames_lost() == 0`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp
import ml_collections
from flax import nnx

from sensorium_jax.data.card import DatasetCard
from sensorium_jax.models import base, kernels
from sensorium_jax.models.geometry import SpatialLayer, grid_to_pixels
from sensorium_jax.models.initializers import lecun_normal
from sensorium_jax.models.inputs import core_input, input_channels, map_scale, pool_frames
from sensorium_jax.models.readouts import readout_and_shifter
from sensorium_jax.models.rotation_equivariant import RotationEquivariantCore

CORE_TYPES = ("rotation_equivariant", "plain")


def default_config() -> ml_collections.ConfigDict:
    """Competition-scale configuration of the GRU baseline (T frames in -> T out)."""
    return ml_collections.ConfigDict(
        {
            "name": "gru",
            # Convolutions run in this dtype; parameters, BatchNorm and the GRU state stay float32.
            "compute_dtype": "float32",  # or "bfloat16"
            # How the GRU's recurrent convolutions run (see sensorium_jax.models.kernels):
            # "native" (XLA's convolution), "folded" or "matmul" (one matrix product of shifted
            # patches: faster on CPU; the same sums with the same kernels) or "auto" (folded
            # on CPU, else native).
            "kernels": "auto",
            "core": {
                # "rotation_equivariant" (the baseline's core, models.rotation_equivariant) or
                # "plain" (one free 2D kernel per channel; what configs without this key built).
                "type": "rotation_equivariant",
                # One entry per layer. rotation_equivariant: channels per rotation (8 x 8
                # rotations = 64 feature maps); plain: feature maps (e.g. (64, 64, 64, 64)).
                "channels": (8, 8, 8, 8),
                "input_kernel": 9,  # first layer's spatial kernel
                "hidden_kernel": 7,  # every later layer's spatial kernel
                # flax convention: the reference's torch momentum 0.9 (running statistics
                # follow the latest batch closely) is 0.1 here.
                "bn_momentum": 0.1,
                # Spatial average pooling of the input frames (see the factorized model's config).
                "input_pool": 1,
                # -- rotation_equivariant only
                "rotations": 8,
                "upsampling": 2,  # Hermite filters sampled this much finer, then block-summed
                "init_std": 0.1,  # std of the normal initial Hermite coefficients
                # The first convolution: "VALID" as the reference (36 x 64 -> 28 x 56 maps);
                # the hidden ones are always zero-padded by kernel // 2.
                "input_padding": "VALID",
                "final_nonlinearity": False,  # no ELU after the last layer, as the reference
                # Regularisers (model.regularizer(), in summed-loss units): Laplace smoothness
                # of the first layer's filters and group sparsity of the hidden ones, with the
                # reference's weights (set for its competition-scale summed loss).
                "gamma_input": 500.0,
                "gamma_hidden": 500_000.0,
                # -- plain only: "SAME" pads every layer, "VALID" crops every layer (26 pixels
                # off the height and the width for 9/7/7/7 kernels).
                "spatial_padding": "SAME",
            },
            # The GRU's convolutions are always zero-padded ("SAME"): the recurrent one must map
            # the state onto a state of the same size.
            "gru": {
                "channels": 64,
                "input_kernel": 9,
                "recurrent_kernel": 9,
            },
            "inputs": {
                "behavior": True,  # behaviour as extra constant input channels
                "pupil_center": False,  # pupil center as two more constant channels
                # Constant maps are multiplied by this before the first convolution; "auto":
                # 1 / k^2 for a first kernel of k x k (see inputs.map_scale).
                "map_scale": "auto",
            },
            "readout": {
                "position_inputs": 2,
                "position_hidden": 30,
                "init_sigma": 0.1,
                "full_sigma": True,
                "neuron_chunk": 1024,
                "centered_positions": True,
                "gamma_readout": 0.0,  # L1 on the feature weights (the baseline's 0)
            },
            "shifter": {"enabled": True, "hidden": (5, 5), "zero_init": True},
        }
    )


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
        kernels_impl: str = "native",
        rngs: nnx.Rngs,
    ):
        self.kernel = nnx.Param(lecun_normal()(rngs.params(), (kernel, kernel, in_channels, out_channels)))
        self.norm = nnx.BatchNorm(out_channels, momentum=bn_momentum, epsilon=1e-5, rngs=rngs)
        self.compute_dtype = compute_dtype
        self.padding = padding
        self.kernels = kernels.check(kernels_impl)

    def __call__(self, x: jax.Array, *, train: bool) -> jax.Array:
        dt = self.compute_dtype
        y = kernels.spatial_conv2d(x.astype(dt), self.kernel[...].astype(dt), self.padding, self.kernels)
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
        kernels_impl: str = "native",
        rngs: nnx.Rngs,
    ):
        kernels.padding_pairs(1, spatial_padding)  # fail early on a bad name
        if not channels:
            raise ValueError("the core needs at least one layer")
        dtype = jnp.dtype(compute_dtype)
        ins = (in_channels, *channels[:-1])
        sizes = (int(input_kernel), *(int(hidden_kernel),) * (len(channels) - 1))
        self.layers = nnx.List(
            [
                FrameConvLayer(
                    ci, co, k, compute_dtype=dtype, bn_momentum=bn_momentum,
                    padding=spatial_padding, kernels_impl=kernels_impl, rngs=rngs,
                )
                for ci, co, k in zip(ins, channels, sizes)
            ]
        )
        self.kernel_sizes = sizes
        self.spatial_padding = spatial_padding
        self.out_channels = int(channels[-1])

    def spatial_layers(self) -> tuple[SpatialLayer, ...]:
        """The stride-1 spatial convolutions between the input and the feature map."""
        return tuple((k, self.spatial_padding) for k in self.kernel_sizes)

    def regularizer(self) -> jax.Array:
        """No penalty: the plain core is trained as before `core.type` existed."""
        return jnp.zeros((), jnp.float32)

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
    run inside it, in the form `kernels_impl` names. The state stays float32.
    """

    def __init__(
        self,
        in_channels: int,
        channels: int,
        input_kernel: int,
        recurrent_kernel: int,
        *,
        compute_dtype: str | jnp.dtype = "float32",
        kernels_impl: str,
        rngs: nnx.Rngs,
    ):
        init = lecun_normal()
        c = int(channels)
        # Input convolution: [update | reset | candidate] in one kernel, with their biases.
        self.input_kernel = nnx.Param(init(rngs.params(), (input_kernel, input_kernel, in_channels, 3 * c)))
        self.bias = nnx.Param(jnp.zeros((3 * c,), jnp.float32))
        # Recurrent convolutions: gates on h, candidate on r * h (so two convolutions per step).
        self.gate_kernel = nnx.Param(init(rngs.params(), (recurrent_kernel, recurrent_kernel, c, 2 * c)))
        self.candidate_kernel = nnx.Param(init(rngs.params(), (recurrent_kernel, recurrent_kernel, c, c)))
        self.channels = c
        self.input_size = int(input_kernel)
        self.compute_dtype = jnp.dtype(compute_dtype)
        self.kernels = kernels.check(kernels_impl)

    def spatial_layers(self) -> tuple[SpatialLayer, ...]:
        """The input convolution (zero padded); the recurrent one maps the state onto itself."""
        return ((self.input_size, "SAME"),)

    def __call__(self, x: jax.Array) -> jax.Array:
        dt, c, impl = self.compute_dtype, self.channels, self.kernels
        wx = self.input_kernel[...].astype(dt)
        gx = frames_folded(lambda im: kernels.spatial_conv2d(im.astype(dt), wx, "SAME", impl), x)
        gx = gx.astype(jnp.float32) + self.bias[...]
        wg = self.gate_kernel[...].astype(dt)
        wc = self.candidate_kernel[...].astype(dt)

        def conv(state: jax.Array, kernel: jax.Array) -> jax.Array:
            return kernels.recurrent_conv(state.astype(dt), kernel, impl).astype(jnp.float32)

        def step(h: jax.Array, gx_t: jax.Array) -> tuple[jax.Array, jax.Array]:
            gates = jax.nn.sigmoid(gx_t[..., : 2 * c] + conv(h, wg))
            z, r = gates[..., :c], gates[..., c:]
            n = jnp.tanh(gx_t[..., 2 * c :] + conv(r * h, wc))
            h = (1.0 - z) * h + z * n
            return h, h

        b, _, hh, ww, _ = gx.shape
        h0 = jnp.zeros((b, hh, ww, c), jnp.float32)
        _, hs = jax.lax.scan(step, h0, jnp.moveaxis(gx, 1, 0))  # [T, B, H, W, C]
        return jnp.moveaxis(hs, 0, 1)


def build_core(
    cc: ml_collections.ConfigDict, in_channels: int, compute_dtype: str, kernels_impl: str, rngs: nnx.Rngs
) -> RotationEquivariantCore | FrameCore:
    """The per-frame core `cc.type` names, from the `core` section of the config; its
    convolutions run in the form `kernels_impl` names."""
    if cc.type == "rotation_equivariant":
        return RotationEquivariantCore(
            in_channels,
            tuple(cc.channels),
            int(cc.input_kernel),
            int(cc.hidden_kernel),
            rotations=int(cc.rotations),
            upsampling=int(cc.upsampling),
            input_padding=cc.input_padding,
            init_std=float(cc.init_std),
            bn_momentum=float(cc.bn_momentum),
            final_nonlinearity=bool(cc.final_nonlinearity),
            gamma_input=float(cc.gamma_input),
            gamma_hidden=float(cc.gamma_hidden),
            compute_dtype=compute_dtype,
            kernels_impl=kernels_impl,
            rngs=rngs,
        )
    if cc.type == "plain":
        return FrameCore(
            in_channels,
            tuple(cc.channels),
            int(cc.input_kernel),
            int(cc.hidden_kernel),
            compute_dtype=compute_dtype,
            bn_momentum=cc.bn_momentum,
            spatial_padding=cc.spatial_padding,
            kernels_impl=kernels_impl,
            rngs=rngs,
        )
    raise ValueError(f"model.core.type must be one of {CORE_TYPES}, got {cc.type!r}")


class GRUModel(base.Model):
    """`model(batch, train)` -> positive rates [B, T, Nmax] (every frame, causal)."""

    def __init__(self, config: ml_collections.ConfigDict, card: DatasetCard, *, rngs: nnx.Rngs):
        if card.kind != "video":
            raise ValueError(f"the GRU model needs video data, the card says {card.kind!r}")
        cc, gc, inputs = config.core, config.gru, config.inputs
        self.use_behavior = bool(inputs.behavior)
        self.use_pupil = bool(inputs.pupil_center)
        self.input_pool = int(cc.input_pool)
        self.map_scale = map_scale(inputs.map_scale, cc.input_kernel)
        self.frame_shape = tuple(int(s) for s in card.frame_shape)
        self.core = build_core(cc, input_channels(card, inputs), config.compute_dtype, config.kernels, rngs)
        self.gru = ConvGRU(
            self.core.out_channels,
            int(gc.channels),
            int(gc.input_kernel),
            int(gc.recurrent_kernel),
            compute_dtype=config.compute_dtype,
            kernels_impl=config.kernels,
            rngs=rngs,
        )
        # assigned once: NNX makes an attribute first set to None static
        self.readout, self.shifter = readout_and_shifter(config, card, int(gc.channels), rngs)

    def regularizer(self) -> jax.Array:
        """The core's penalty (the rotation-equivariant core's Laplace and group sparsity)
        plus the readout's (L1 on the feature weights)."""
        return self.core.regularizer() + self.readout.regularizer()

    def frames_lost(self) -> int:
        """No frame is lost: the GRU starts from a zero state and predicts every frame."""
        return 0

    def readout_positions(self) -> base.ReadoutPositions:
        """Mean readout positions in screen pixels, through the input pooling, the frame core's
        convolutions and the GRU's input convolution."""
        layers = (*self.core.spatial_layers(), *self.gru.spatial_layers())
        pixels = grid_to_pixels(self.readout.positions(), self.frame_shape, self.input_pool, layers)
        return base.ReadoutPositions(pixels)

    def __call__(self, batch: base.Batch, train: bool = False) -> jax.Array:
        x = pool_frames(core_input(batch, self.use_behavior, self.use_pupil, self.map_scale), self.input_pool)
        features = self.gru(self.core(x, train=train))
        mouse = jnp.asarray(batch["mouse"], jnp.int32)
        shift = None
        if self.shifter is not None:
            shift = self.shifter(jnp.asarray(batch["pupil_center"]), mouse)
        return jax.nn.elu(self.readout(features, mouse, shift, train=train)) + 1.0


Model = GRUModel
