"""Backend-specific formulations of the zoo's operations, behind one option: `model.kernels`.

Every function here computes the same sums in one of several forms; the models hold only the
maths and call these with the form their config names. The choice is made once, by
`resolve` in `build_model`, from the option's value:

- "native": XLA's own operations as the model is written: 3D convolutions, native convolutions
  in the GRU's recurrence, native grouped depthwise convolutions, ensemble members vmapped into
  one batched program. The form for accelerators.
- "folded": the forms XLA runs best on CPU: the factorized core's spatial convolutions as 2D
  convolutions (frames folded into the batch), its temporal ones as 2D convolutions over
  (T, H*W); from 32 output channels (`uses_patch_products`, chosen by measurement) both, and
  the GRU's feed-forward convolutions, as matrix products of input patches; the GRU's recurrent
  convolutions as one matrix product of shifted patches, depthwise convolutions as shifted
  multiply-adds, ensemble members one after another in the program.
- "matmul": "folded", and every temporal convolution of the factorized core as matrix products
  of time-shifted frames (faster for wide layers on CPU, slower for narrow ones).
- "auto": "folded" on CPU, "native" elsewhere: the fastest measured for the backend.

docs/PERFORMANCE.md has the measurements behind each choice.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable, Mapping
from typing import Literal

import jax
import jax.numpy as jnp
from flax import nnx
from jax.sharding import PartitionSpec as P


Kernels = Literal["auto", "native", "folded", "matmul"]
RESOLVED: tuple[str, ...] = ("native", "folded", "matmul")

_DN3 = ("NDHWC", "DHWIO", "NDHWC")
_DN2 = ("NHWC", "HWIO", "NHWC")


# --------------------------------------------------------------------------- the option


def resolve(value: str, backend: str | None = None) -> str:
    """The form `value` names on `backend` (default: JAX's): 'auto' becomes 'folded' on CPU
    and 'native' elsewhere; other values are checked and kept."""
    if value == "auto":
        backend = backend or jax.default_backend()
        return "folded" if backend == "cpu" else "native"
    return check(value)


def check(impl: str) -> str:
    """`impl` if it is a resolved form; a clear error otherwise (models get resolved values)."""
    if impl not in RESOLVED:
        hint = " ('auto' is resolved by build_model)" if impl == "auto" else ""
        raise ValueError(f"model.kernels must be 'auto', 'native', 'folded' or 'matmul'; "
                         f"this function needs a resolved form, one of {RESOLVED}, got {impl!r}{hint}")
    return impl


def padding_pairs(kernel: int, padding: str) -> tuple[int, int]:
    """(before, after) zero padding of one spatial axis for a `kernel`-wide convolution:
    none ("VALID") or the kernel's half ("SAME", the extra pixel of an even kernel after)."""
    if padding == "VALID":
        return (0, 0)
    if padding != "SAME":
        raise ValueError(f"spatial padding must be 'VALID' or 'SAME', got {padding!r}")
    return ((kernel - 1) // 2, kernel // 2)


# --------------------------------------------------------------------------- factorized 3D core


def _spatial_padding(kernel: jax.Array, padding: str) -> list[tuple[int, int]]:
    """(H, W) padding of a (kt, kh, kw) kernel."""
    kh, kw = kernel.shape[1:3]
    return [padding_pairs(kh, padding), padding_pairs(kw, padding)]


def conv3d(x: jax.Array, kernel: jax.Array, padding: str = "VALID") -> jax.Array:
    """3D convolution, x [B, T, H, W, Ci], kernel [kt, kh, kw, Ci, Co]: never padded in time,
    padded in space as `padding` says."""
    pad = [(0, 0), *_spatial_padding(kernel, padding)]
    return jax.lax.conv_general_dilated(x, kernel, (1, 1, 1), pad, dimension_numbers=_DN3)


# When "folded" runs a stride-1 convolution (spatial, or temporal over (T, H*W)) as matrix
# products of input patches (`conv2d_patch_products`): XLA:CPU's own convolutions are fast up
# to 16 output channels and 2-4x slower than the products from 32 (forward, kernel and input
# gradients); spatial layers with patches from WIDE_SPATIAL_PATCH wide gain at any output
# width (docs/PERFORMANCE.md).
PATCH_PRODUCTS_MIN_OUTPUTS = 32
WIDE_SPATIAL_PATCH = 800
# Bytes of patches built at once: a few frames at a time, so they stay near the caches and
# are never all stored.
PATCH_CHUNK_BYTES = 4 * 2**20
# Pixels per block of a temporal layer's time columns: the blocks are the products' "frames".
TEMPORAL_BLOCK_PIXELS = 64


def uses_patch_products(patch_width: int, channels_out: int) -> bool:
    """Whether "folded" runs a convolution with this patch width (kernel taps x input channels)
    and output width as patch products."""
    return channels_out >= PATCH_PRODUCTS_MIN_OUTPUTS or patch_width >= WIDE_SPATIAL_PATCH


def spatial_conv_folded(x: jax.Array, kernel: jax.Array, padding: str = "VALID") -> jax.Array:
    """(1, kh, kw) convolution as a 2D convolution with the frames folded into the batch."""
    b, t, h, w, c = x.shape
    y = spatial_conv2d(x.reshape(b * t, h, w, c), kernel[0], padding, "folded")
    return y.reshape(b, t, *y.shape[1:])


def spatial_conv2d(x: jax.Array, kernel: jax.Array, padding: str, impl: str) -> jax.Array:
    """Stride-1 2D convolution of [N, H, W, Ci] by [kh, kw, Ci, Co] ("VALID" or "SAME"): XLA's,
    or in the CPU forms as patch products where those are faster (`uses_patch_products`)."""
    kh, kw, ci, co = kernel.shape
    pads = [padding_pairs(kh, padding), padding_pairs(kw, padding)]
    if check(impl) != "native" and uses_patch_products(kh * kw * ci, co):
        return conv2d_patch_products(jnp.pad(x, ((0, 0), *pads, (0, 0))), kernel)
    return jax.lax.conv_general_dilated(x, kernel, (1, 1), pads, dimension_numbers=_DN2)


def _patches(x: jax.Array, kh: int, kw: int) -> jax.Array:
    """[N, H, W, C] -> [N, H - kh + 1, W - kw + 1, kh * kw * C], ordered as the HWIO kernel."""
    ho, wo = x.shape[1] - kh + 1, x.shape[2] - kw + 1
    return jnp.concatenate([x[:, i:i + ho, j:j + wo] for i in range(kh) for j in range(kw)], axis=-1)


@dataclasses.dataclass(frozen=True)
class FrameChunks:
    """How a loop cuts a batch's `frames` into `count` chunks of `size` frames; `split`: the
    ambient mesh's axes, over which each chunk stays split (empty: contiguous chunks, the
    last padded with zero frames, which add nothing to the kernel gradient's sums and whose
    outputs are dropped)."""
    count: int
    size: int
    frames: int
    split: tuple[str, ...]

    def cut(self, x: jax.Array) -> jax.Array:
        """[frames, ...] -> [count, size, ...]"""
        if self.split:  # chunk c: frames c, c + count, c + 2 count, ...
            chunks = x.reshape(self.size, self.count, *x.shape[1:]).swapaxes(0, 1)
            return jax.lax.with_sharding_constraint(chunks, P(None, self.split))
        pad = self.count * self.size - self.frames
        x = jnp.pad(x, ((0, pad),) + ((0, 0),) * (x.ndim - 1))
        return x.reshape(self.count, self.size, *x.shape[1:])

    def join(self, y: jax.Array) -> jax.Array:
        """[count, size, ...] -> [frames, ...], the inverse of `cut`."""
        if self.split:
            y = y.swapaxes(0, 1).reshape(self.frames, *y.shape[2:])
            return jax.lax.with_sharding_constraint(y, P(self.split))
        return y.reshape(self.count * self.size, *y.shape[2:])[:self.frames]


def frame_chunks(frames: int, bytes_per_frame: int) -> FrameChunks:
    """Chunks of at most `PATCH_CHUNK_BYTES` of patches. Under a mesh whose devices share the
    frames evenly (the batch's leading axis is split over them), chunk c takes every count-th
    frame, `count` dividing each device's share: every chunk is then split over the devices as
    the batch is, and each device loops over its own frames (contiguous chunks would each sit
    on one device, and XLA would gather the whole batch onto every device)."""
    most = max(1, min(frames, PATCH_CHUNK_BYTES // bytes_per_frame))
    least_count = -(-frames // most)
    mesh = jax.sharding.get_abstract_mesh()
    shards = 1 if mesh.empty else mesh.size
    if shards > 1 and frames % shards == 0:
        share = frames // shards
        count = next((c for c in range(least_count, share + 1) if share % c == 0), share)
        return FrameChunks(count, frames // count, frames, tuple(mesh.axis_names))
    return FrameChunks(least_count, most, frames, ())


@jax.custom_vjp
def conv2d_patch_products(x: jax.Array, kernel: jax.Array) -> jax.Array:
    """The unpadded 2D convolution of [N, H, W, Ci] by [kh, kw, Ci, Co] as (input patches) @
    (kernel), a chunk of frames at a time; in the backward pass, chunk by chunk, the kernel
    gradient is (input patches)^T @ (output gradient), the patches rebuilt, and the input
    gradient (output gradient) @ (kernel)^T, each tap's share added back at its offset."""
    return _patch_products_forward(x, kernel)[0]


def _patch_products_forward(x: jax.Array, kernel: jax.Array):
    kh, kw, ci, co = kernel.shape
    n, h, w, _ = x.shape
    ho, wo = h - kh + 1, w - kw + 1
    chunks = frame_chunks(n, ho * wo * kh * kw * ci * x.dtype.itemsize)
    weights = kernel.reshape(-1, co)
    y = jax.lax.map(lambda chunk: _patches(chunk, kh, kw) @ weights, chunks.cut(x))
    return chunks.join(y), (x, kernel)


def _patch_products_backward(saved, cotangent: jax.Array):
    x, kernel = saved
    kh, kw, ci, co = kernel.shape
    n, ho, wo, _ = cotangent.shape
    chunks = frame_chunks(n, ho * wo * kh * kw * ci * x.dtype.itemsize)
    taps_by_output = kernel.reshape(-1, co).T.astype(cotangent.dtype)  # [Co, kh * kw * Ci]

    def input_gradient(grads: jax.Array) -> jax.Array:
        shares = (grads @ taps_by_output).reshape(*grads.shape[:3], kh, kw, ci)
        dx = jnp.zeros((grads.shape[0], ho + kh - 1, wo + kw - 1, ci), shares.dtype)
        for i in range(kh):
            for j in range(kw):
                dx = dx.at[:, i:i + ho, j:j + wo].add(shares[:, :, :, i, j])
        return dx

    def chunk_gradients(total: jax.Array, pair: tuple[jax.Array, jax.Array]) -> tuple[jax.Array, jax.Array]:
        inputs, grads = pair
        total = total + jnp.einsum("nhwp,nhwd->pd", _patches(inputs, kh, kw), grads,
                                   preferred_element_type=jnp.float32)
        return total, input_gradient(grads)

    dk, dx = jax.lax.scan(chunk_gradients, jnp.zeros((kh * kw * ci, co), jnp.float32),
                          (chunks.cut(x), chunks.cut(cotangent)))
    return chunks.join(dx).astype(x.dtype), dk.reshape(kernel.shape).astype(kernel.dtype)


conv2d_patch_products.defvjp(_patch_products_forward, _patch_products_backward)


def temporal_conv_folded(x: jax.Array, kernel: jax.Array) -> jax.Array:
    """(kt, 1, 1) convolution as a 2D convolution over (T, H*W)."""
    b, t, h, w, c = x.shape
    y = jax.lax.conv_general_dilated(
        x.reshape(b, t, h * w, c), kernel[:, 0], (1, 1), "VALID", dimension_numbers=_DN2
    )
    return y.reshape(b, y.shape[1], h, w, y.shape[-1])


def temporal_conv_matmul(x: jax.Array, kernel: jax.Array) -> jax.Array:
    """(kt, 1, 1) convolution as kt matrix products of time-shifted frames, summed: XLA:CPU
    runs these far faster than the (kt, 1) convolution over (T, H*W) for wide layers."""
    kt = kernel.shape[0]
    t = x.shape[1] - kt + 1
    return sum(jnp.einsum("bthwc,cd->bthwd", x[:, i : i + t], kernel[i, 0, 0]) for i in range(kt))


def temporal_conv_patch_products(x: jax.Array, kernel: jax.Array) -> jax.Array:
    """(kt, 1, 1) convolution as `conv2d_patch_products` of a (kt, 1) kernel over (T, pixels),
    the pixels cut into blocks of `TEMPORAL_BLOCK_PIXELS` (each block's time columns are one
    "frame" of the products, so a chunk of patches stays small)."""
    b, t, h, w, c = x.shape
    kt, co = kernel.shape[0], kernel.shape[-1]
    pixels, block = h * w, TEMPORAL_BLOCK_PIXELS
    pad = -pixels % block  # zero pixels: their outputs are dropped
    blocks = (pixels + pad) // block
    xs = jnp.pad(x.reshape(b, t, pixels, c), ((0, 0), (0, 0), (0, pad), (0, 0)))
    xs = xs.reshape(b, t, blocks, block, c).transpose(0, 2, 1, 3, 4).reshape(b * blocks, t, block, c)
    y = conv2d_patch_products(xs, kernel.reshape(kt, 1, c, co))
    t_out = y.shape[1]
    y = y.reshape(b, blocks, t_out, block, co).transpose(0, 2, 1, 3, 4).reshape(b, t_out, blocks * block, co)
    return y[:, :, :pixels].reshape(b, t_out, h, w, co)


def temporal_form(impl: str, channels_in: int, channels_out: int, kt: int) -> str:
    """How a (kt, 1, 1) convolution runs in form `impl`: "native" (3D), "folded" (2D over
    (T, H*W)), "patches" (`temporal_conv_patch_products`) or "matmul" (shifted frames);
    "folded" picks by the layer's widths (`uses_patch_products`)."""
    impl = check(impl)
    if impl == "folded" and uses_patch_products(kt * channels_in, channels_out):
        return "patches"
    return impl


def factorized_conv(x: jax.Array, kernel: jax.Array, impl: str, padding: str = "VALID") -> jax.Array:
    """A 3D convolution whose kernel is (1, k, k) or (k, 1, 1), in the form `impl` names; never
    padded in time, padded in space as `padding` ("VALID" or "SAME") says. The kernel keeps
    the 3D layout (DHWIO) in every form, so checkpoints do not depend on the backend."""
    impl = check(impl)
    if impl == "native":
        return conv3d(x, kernel, padding)
    kt, kh, kw = kernel.shape[:3]
    if kt == 1:
        return spatial_conv_folded(x, kernel, padding)
    if kh == 1 and kw == 1:
        form = temporal_form(impl, *kernel.shape[3:5], kt)
        if form == "patches":
            return temporal_conv_patch_products(x, kernel)
        return temporal_conv_matmul(x, kernel) if form == "matmul" else temporal_conv_folded(x, kernel)
    return conv3d(x, kernel, padding)


# --------------------------------------------------------------------------- GRU recurrence


def conv2d(x: jax.Array, kernel: jax.Array, padding: str = "SAME") -> jax.Array:
    """XLA's stride-1 2D convolution of [N, H, W, Ci] by [kh, kw, Ci, Co], whatever the backend."""
    return spatial_conv2d(x, kernel, padding, "native")


def recurrent_conv(x: jax.Array, kernel: jax.Array, impl: str) -> jax.Array:
    """The GRU's zero-padded state convolution: native, or as patch products ("folded",
    "matmul": `conv2d_patch_products`; inside the GRU's scan XLA's CPU convolutions of small
    states are slow). The patches are rebuilt in the backward pass, not stored: kept, they
    would be k^2 copies of every state of the sequence (a 9 x 9 kernel: 81 x the states)."""
    if check(impl) == "native":
        return conv2d(x, kernel)
    kh, kw = kernel.shape[:2]
    pads = ((0, 0), padding_pairs(kh, "SAME"), padding_pairs(kw, "SAME"), (0, 0))
    return conv2d_patch_products(jnp.pad(x, pads), kernel)


# --------------------------------------------------------------------------- depthwise convolutions


def depthwise_native(x: jax.Array, kernel: jax.Array, stride: int) -> jax.Array:
    """Depthwise (1, kh, kw) (stride s, padding k // 2), (kt, 1, 1) (zero "SAME" padding in
    time) or full (kt, kh, kw) (stride 1, both paddings) convolution of [B, T, H, W, C] by a
    [kt, kh, kw, 1, C] kernel, as XLA's grouped 2D convolution (frames folded into the batch,
    or over (T, H * W)), or its grouped 3D one."""
    kt, kh, kw, _, c = kernel.shape
    b, t, h, w, _ = x.shape
    if kt > 1 and (kh > 1 or kw > 1):
        if stride != 1:
            raise ValueError(f"a full 3D depthwise convolution runs at stride 1, got {stride}")
        return jax.lax.conv_general_dilated(
            x, kernel, (1, 1, 1), [((kt - 1) // 2, kt // 2), (kh // 2, kh // 2), (kw // 2, kw // 2)],
            dimension_numbers=_DN3, feature_group_count=c,
        )
    if kt == 1:
        y = jax.lax.conv_general_dilated(
            x.reshape(b * t, h, w, c), kernel[0], (stride, stride),
            [(kh // 2, kh // 2), (kw // 2, kw // 2)], dimension_numbers=_DN2, feature_group_count=c,
        )
        return y.reshape(b, t, *y.shape[1:])
    y = jax.lax.conv_general_dilated(
        x.reshape(b, t, h * w, c), kernel[:, 0], (1, 1), [((kt - 1) // 2, kt // 2), (0, 0)],
        dimension_numbers=_DN2, feature_group_count=c,
    )
    return y.reshape(b, t, h, w, c)


def depthwise_shifts(x: jax.Array, kernel: jax.Array, stride: int) -> jax.Array:
    """`depthwise_native` as a sum over the kernel's taps of shifted (strided) slices of the
    zero-padded input times a per-channel weight: the same sums, in elementwise operations
    XLA runs well on CPU (its CPU grouped convolutions are slow).

    Its backward pass takes each tap's kernel gradient from a fresh slice of the input rather
    than from stored ones (plain differentiation keeps kt x kh x kw copies of the input)."""
    return _shifts_with_sliced_gradient(x, kernel, stride)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2,))
def _shifts_with_sliced_gradient(x: jax.Array, kernel: jax.Array, stride: int) -> jax.Array:
    return _depthwise_shifts(x, kernel, stride)


def _shifts_forward(x: jax.Array, kernel: jax.Array, stride: int):
    return _depthwise_shifts(x, kernel, stride), (x, kernel)


def _shifts_backward(stride: int, saved, cotangent: jax.Array):
    x, kernel = saved
    dx = jax.vjp(lambda v: _depthwise_shifts(v, kernel, stride), x)[1](cotangent)[0]  # linear in x
    # One tap at a time in a loop: as separate reductions XLA kept every tap's slice at once.
    kt, kh, kw = kernel.shape[:3]
    xp, span = _padded_input(x, kernel.shape, stride)

    def tap_gradient(index: jax.Array) -> jax.Array:
        dt_, rest = jnp.divmod(index, kh * kw)
        dy, dx_ = jnp.divmod(rest, kw)
        tap = jax.lax.dynamic_slice(xp, (0, dt_, dy, dx_, 0), span)[:, :, ::stride, ::stride]
        return jnp.sum(tap * cotangent, axis=(0, 1, 2, 3), dtype=jnp.float32)

    grads = jax.lax.map(tap_gradient, jnp.arange(kt * kh * kw))
    return dx, grads.reshape(kernel.shape).astype(kernel.dtype)


_shifts_with_sliced_gradient.defvjp(_shifts_forward, _shifts_backward)


def _taps(x: jax.Array, kernel_shape: tuple[int, ...], stride: int) -> list[jax.Array]:
    """The (strided) slices of the zero-padded input each kernel tap multiplies, taps in the
    kernel's (t, y, x) order."""
    kt, kh, kw = kernel_shape[:3]
    xp, span = _padded_input(x, kernel_shape, stride)
    return [
        jax.lax.slice(xp, (0, dt_, dy, dx, 0), tuple(a + b for a, b in zip((0, dt_, dy, dx, 0), span)),
                      (1, 1, stride, stride, 1))
        for dt_ in range(kt) for dy in range(kh) for dx in range(kw)
    ]


def _padded_input(x: jax.Array, kernel_shape: tuple[int, ...], stride: int) -> tuple[jax.Array, tuple[int, ...]]:
    """The input zero padded for a depthwise kernel ("SAME" in time, k // 2 in space), and the
    extent of one tap's slice of it before its spatial stride."""
    kt, kh, kw = kernel_shape[:3]
    b, t, h, w, c = x.shape
    xp = jnp.pad(x, ((0, 0), ((kt - 1) // 2, kt // 2), (kh // 2, kh // 2), (kw // 2, kw // 2), (0, 0)))
    ho, wo = (h + 2 * (kh // 2) - kh) // stride + 1, (w + 2 * (kw // 2) - kw) // stride + 1
    return xp, (b, t, (ho - 1) * stride + 1, (wo - 1) * stride + 1, c)


def _depthwise_shifts(x: jax.Array, kernel: jax.Array, stride: int) -> jax.Array:
    kt, kh, kw = kernel.shape[:3]
    weights = kernel.reshape(kt * kh * kw, -1)
    out = None
    for tap, weight in zip(_taps(x, kernel.shape, stride), weights):
        term = tap * weight
        out = term if out is None else out + term
    return out


def depthwise_conv(x: jax.Array, kernel: jax.Array, stride: int, impl: str) -> jax.Array:
    """A depthwise convolution, native or as shifted multiply-adds ("folded", "matmul")."""
    if check(impl) == "native":
        return depthwise_native(x, kernel, stride)
    return depthwise_shifts(x, kernel, stride)


# --------------------------------------------------------------------------- ensemble members

MemberCall = Callable[[nnx.Module, Mapping[str, jax.Array]], jax.Array]


def run_members(members: nnx.Module, call: MemberCall, inputs: Mapping[str, jax.Array], count: int,
                impl: str) -> jax.Array:
    """[count, ...]: `call(member, inputs)` for each of `count` members stacked on a leading
    axis; their state (BatchNorm statistics, RNG counters) moves on in `members`.

    "native": one vmapped program (convolutions with a stacked kernel become grouped
    convolutions); "folded"/"matmul": the members one after another in the program (compile
    time grows with their number, but XLA:CPU's grouped convolutions are slow).
    """
    if check(impl) == "native":

        @nnx.vmap(in_axes=(0, None), out_axes=0)
        def run(member: nnx.Module, clip: Mapping[str, jax.Array]) -> jax.Array:
            return call(member, clip)

        return run(members, inputs)

    graphdef, state = nnx.split(members)

    def one(member_state: nnx.State) -> tuple[jax.Array, nnx.State]:
        member = nnx.merge(graphdef, member_state)
        out = call(member, inputs)
        return out, nnx.state(member)

    results = [one(jax.tree.map(lambda x, i=i: x[i], state)) for i in range(count)]
    outputs = jnp.stack([out for out, _ in results])
    new_state = jax.tree.map(lambda *xs: jnp.stack(xs), *[member for _, member in results])
    nnx.update(members, new_state)
    return outputs
