"""The networks `benchmarks/bench_vs_torch.py` compares: our model and the same network in
PyTorch, built for identical shapes, each as a zero-argument training step.

Each side lives in its own worker process (`vs_torch`), so only one framework is imported
here per process: `jax_training_step` imports JAX, `torch_training_step` imports torch.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from pathlib import Path

import ml_collections
import numpy as np

REPO = Path(__file__).resolve().parents[2]
MODELS = ("factorized", "gru", "dwiseneuro", "quickstart")
CONFIG_FILES = {
    "factorized": "factorized_baseline.py",
    "gru": "gru_baseline.py",
    "dwiseneuro": "dwiseneuro.py",
    "quickstart": "quickstart.py",
}


@dataclasses.dataclass(frozen=True)
class Shapes:
    """One mouse's training batch: `clips` clips of `frames` frames of height x width, `neurons`
    neurons, 2 behaviour variables and the pupil center."""

    clips: int
    frames: int
    height: int = 36
    width: int = 64
    neurons: int = 8000
    behavior: int = 2


# Competition shapes: 8 clips of the model's clip length, 36 x 64 frames, a mouse of 8,000
# neurons (SENSORIUM 2023's mice have 7,440-8,285). The quickstart's are its own config's.
COMPETITION = {
    "factorized": Shapes(8, 80),
    "gru": Shapes(8, 80),
    "dwiseneuro": Shapes(8, 32),
    "quickstart": Shapes(4, 32, neurons=1000),
}
TINY = {
    "factorized": Shapes(2, 12, 18, 24, neurons=50),
    "gru": Shapes(2, 6, 18, 24, neurons=50),
    "dwiseneuro": Shapes(2, 8, 16, 16, neurons=50),
    "quickstart": Shapes(2, 10, 18, 24, neurons=50),
    # the transformers' smoke networks tokenize full 36 x 64 frames
    "viv1t": Shapes(2, 12, neurons=50),
    "dynamic_v1fm": Shapes(2, 16, neurons=50),
}
# Models whose tiny network is their config file's own `smoke` variant (the tests train it).
SMOKE_NETWORKS = {"viv1t": "viv1t.py", "dynamic_v1fm": "dynamic_v1fm.py"}


def load_model_config(model: str, tiny: bool = False) -> ml_collections.ConfigDict:
    """The training config of `model` (configs/<file>), shrunk to a tiny network when `tiny`."""
    from sensorium_jax.config import load_config

    config = load_config(REPO / "configs" / CONFIG_FILES[model])
    if tiny:
        shrink(model, config.model)
    return config


def shrink(model: str, m: ml_collections.ConfigDict) -> None:
    """A network of a few channels and small kernels with the model's structure."""
    if model in SMOKE_NETWORKS:
        from sensorium_jax.config import load_config

        m.update(load_config(REPO / "configs" / SMOKE_NETWORKS[model], "smoke").model)
    elif model in ("factorized", "quickstart"):
        m.core.channels, m.core.spatial_kernels, m.core.temporal_kernels = (4, 6), (5, 3), (3, 3)
        m.readout.position_hidden = 6
    elif model == "gru":
        m.core.channels, m.core.rotations = (2, 2), 4
        m.core.input_kernel, m.core.hidden_kernel = 5, 3
        m.gru.channels, m.gru.input_kernel, m.gru.recurrent_kernel = 4, 3, 3
        m.readout.position_hidden = 6
    elif model == "dwiseneuro":
        m.clip_length, m.frame_size = 8, (16, 16)
        m.stem.channels = 8
        m.blocks.channels, m.blocks.spatial_strides = (8, 16, 16), (2, 2, 1)
        m.blocks.expansion_ratio, m.blocks.temporal_kernel, m.blocks.se_reduce_ratio = 2, 3, 4
        m.cortex.channels = (32, 64)


def set_path(config: ml_collections.ConfigDict, path: str, value) -> None:
    """config["a.b.c"] = value, for an existing key (a typo fails instead of adding one)."""
    *parents, key = path.split(".")
    for name in parents:
        config = config[name]
    if key not in config:
        raise KeyError(f"model config has no {path!r}")
    current = config[key]
    if isinstance(current, bool) and isinstance(value, str):
        value = value.lower() in ("true", "1", "yes")
    elif isinstance(current, (int, float, str)) and not isinstance(current, bool):
        value = type(current)(value)
    config[key] = value


def shapes_for(model: str, tiny: bool, clips: int | None = None, neurons: int | None = None) -> Shapes:
    """The benchmark's shapes for `model`, with the clips and neurons optionally replaced."""
    shapes = (TINY if tiny else COMPETITION)[model]
    return dataclasses.replace(shapes, clips=clips or shapes.clips, neurons=neurons or shapes.neurons)


def coordinates(shapes: Shapes, seed: int = 0) -> np.ndarray:
    """[N, 3] cortical positions in microns, the same on both sides (fixed seed)."""
    return np.random.default_rng(seed).uniform(0, 500, (shapes.neurons, 3)).astype(np.float32)


def host_batch(shapes: Shapes, mice: int = 1, seed: int = 0) -> dict[str, np.ndarray]:
    """One training batch in our layout (channels last), from which both sides take their
    input; with several mice the clips take turns."""
    rng = np.random.default_rng(seed)
    b, t, n = shapes.clips, shapes.frames, shapes.neurons
    return {
        "video": rng.normal(size=(b, t, shapes.height, shapes.width, 1)).astype(np.float32),
        "behavior": rng.normal(size=(b, t, shapes.behavior)).astype(np.float32),
        "pupil_center": rng.normal(size=(b, t, 2)).astype(np.float32),
        "responses": rng.gamma(1.0, 1.0, size=(b, t, n)).astype(np.float32),
        "neuron_mask": np.ones((b, n), bool),
        "frame_mask": np.ones((b, t), bool),
        "mouse": (np.arange(b) % mice).astype(np.int32),
    }


# --------------------------------------------------------------------------- ours


def make_card(shapes: Shapes, mice: int = 1):
    """A dataset card of `mice` mice of `shapes.neurons` neurons each, unit statistics."""
    from sensorium_jax.data.card import DatasetCard, MouseCard

    n = shapes.neurons
    cards = tuple(
        MouseCard(
            name=f"mouse{i}", unit_ids=np.arange(n), coordinates=coordinates(shapes, seed=i),
            mean_response=np.ones(n, np.float32), response_scale=np.ones(n, np.float32), video_mean=0.0,
            video_std=1.0, behavior_scale=np.ones(shapes.behavior, np.float32),
            pupil_mean=np.zeros(2, np.float32), pupil_std=np.ones(2, np.float32),
        )
        for i in range(mice)
    )
    return DatasetCard(mice=cards, frame_shape=(shapes.height, shapes.width), behavior_dim=shapes.behavior)


@dataclasses.dataclass
class JaxTraining:
    """Our training step as `train.py` builds it: jitted step, replicated state, a batch on the
    devices, and the model's trainable parameter count."""

    params: int
    step: Callable
    state: object
    batch: dict
    card: object

    def run(self) -> float:
        """One step; its loss, synchronised."""
        import jax

        self.state, metrics = self.step(self.state, self.batch)
        return float(jax.block_until_ready(metrics["loss"]))


def jax_training(config: ml_collections.ConfigDict, shapes: Shapes, mice: int = 1) -> JaxTraining:
    """The same state, optimizer and jitted step `train.py` uses, for `config.model` on a
    synthetic card of `mice` mice, with one batch of `shapes` already on the devices."""
    import jax
    from flax import nnx

    from sensorium_jax.models import build_model
    from sensorium_jax.models.losses import configured_loss
    from sensorium_jax.training.mesh import global_batch, make_data_mesh, replicate
    from sensorium_jax.training.schedules import learning_rate_schedule, make_optimizer
    from sensorium_jax.training.state import create_train_state
    from sensorium_jax.training.steps import make_train_step

    card = make_card(shapes, mice)
    net = build_model(config.model, card, nnx.Rngs(0))
    params = sum(int(math.prod(p.shape)) for p in jax.tree.leaves(nnx.state(net, nnx.Param)))
    mesh = make_data_mesh()
    tx = make_optimizer(config.optimizer, learning_rate_schedule(config.schedule, int(config.train.steps)))
    graphdef, state = create_train_state(net, tx)
    del net
    step = make_train_step(graphdef, tx, configured_loss(config.train), mesh)
    return JaxTraining(params, step, replicate(state, mesh), global_batch(host_batch(shapes, mice), mesh), card)


def jax_training_step(model: str, shapes: Shapes, tiny: bool, overrides: dict) -> tuple[int, Callable[[], float]]:
    """(trainable parameters, one training step returning its loss) of our `model` for one mouse."""
    config = load_model_config(model, tiny)
    for path, value in overrides.items():
        set_path(config.model, path, value)
    training = jax_training(config, shapes)
    return training.params, training.run


# --------------------------------------------------------------------------- PyTorch


def torch_training_step(model: str, shapes: Shapes, tiny: bool) -> tuple[int, Callable[[], float]]:
    """(trainable parameters, one training step returning its loss) of the same network in
    PyTorch: the reference modules in training mode, Poisson loss, AdamW."""
    import torch

    config = load_model_config(model, tiny)
    net, forward = TORCH_BUILDERS[model](config.model, shapes)
    net.train()
    params = sum(p.numel() for p in net.parameters() if p.requires_grad)
    optimizer = torch.optim.AdamW([p for p in net.parameters() if p.requires_grad], lr=1e-3)
    batch = {k: torch.from_numpy(v) for k, v in host_batch(shapes).items()}

    def run() -> float:
        optimizer.zero_grad(set_to_none=True)
        rates = forward(batch)  # [B, T', N]
        targets = batch["responses"][:, -rates.shape[1]:]
        loss = (rates - targets * torch.log(rates + 1e-12)).sum() / targets.numel()
        loss.backward()
        optimizer.step()
        return float(loss.detach())

    return params, run


def constant_maps(batch: dict, keys: tuple[str, ...]):
    """[B, C, T, H, W]: the video, then each of `keys` as constant maps (channels first)."""
    import torch

    video = batch["video"][..., 0][:, None]  # [B, 1, T, H, W]
    b, _, t, h, w = video.shape
    parts = [video] + [batch[k].permute(0, 2, 1)[..., None, None].expand(b, -1, t, h, w) for k in keys]
    return torch.cat(parts, dim=1)


def torch_factorized(m: ml_collections.ConfigDict, shapes: Shapes):
    """neuralpredictors' factorized core (its convolutions without bias, as ours: BatchNorm's
    shift absorbs it), full Gaussian readout with the grid-mean predictor, MLP shifter."""
    import torch
    import torch.nn.functional as F

    from sensorium_jax.port_torch.reference import factorized as ref

    cc = m.core
    ks, kt = tuple(cc.spatial_kernels), tuple(cc.temporal_kernels)
    if len(set(ks[1:])) > 1 or len(set(kt[1:])) > 1:
        raise ValueError("the reference core has one hidden kernel size")
    channels = 1 + shapes.behavior * bool(m.inputs.behavior) + 2 * bool(m.inputs.pupil_center)
    core = ref.Factorized3dCore(channels, list(cc.channels), ks[0], kt[0], ks[-1], kt[-1],
                                padding=cc.spatial_padding == "SAME", bias=False)
    grid = coordinates(shapes)[:, :2]
    readout = torch.nn.ModuleDict({"mouse0": ref.FullGaussian2d(cc.channels[-1], shapes.neurons, grid,
                                                               int(m.readout.position_hidden))})
    hidden = tuple(m.shifter.hidden)
    shifter = torch.nn.ModuleDict({"mouse0": ref.MLP(2, hidden[0], len(hidden) + 1)})
    net = ref.VideoFiringRateEncoder(core, readout, shifter)
    keys = ("behavior",) * bool(m.inputs.behavior) + ("pupil_center",) * bool(m.inputs.pupil_center)
    pool = int(cc.input_pool)

    def forward(batch: dict):
        x = constant_maps(batch, keys)
        if pool > 1:
            x = F.avg_pool3d(x, (1, pool, pool))
        return net(x, "mouse0", batch["pupil_center"].permute(0, 2, 1))

    return net, forward


def torch_gru(m: ml_collections.ConfigDict, shapes: Shapes):
    """The rotation-equivariant 2D core, the convolutional GRU (one bias per gate, as ours),
    Gaussian readout and shifter."""
    import torch

    from sensorium_jax.port_torch.reference import factorized as ref
    from sensorium_jax.port_torch.reference import gru as ref_gru

    cc, g = m.core, m.gru
    if len(set(cc.channels)) > 1:
        raise ValueError("the reference core has one channel count for every layer")
    core = ref_gru.RotationEquivariant2dCore(1 + shapes.behavior, cc.channels[0], cc.input_kernel, cc.hidden_kernel,
                                             len(cc.channels), cc.rotations, int(cc.upsampling))
    gru = ref_gru.GRU_Module(cc.channels[0] * cc.rotations, g.channels, g.input_kernel, g.recurrent_kernel,
                             hidden_bias=False)
    readout = torch.nn.ModuleDict({"mouse0": ref.FullGaussian2d(g.channels, shapes.neurons, coordinates(shapes)[:, :2],
                                                               int(m.readout.position_hidden))})
    hidden = tuple(m.shifter.hidden)
    shifter = torch.nn.ModuleDict({"mouse0": ref.MLP(2, hidden[0], len(hidden) + 1)})
    net = ref_gru.VideoFiringRateEncoder2d(core, readout, shifter, gru)

    def forward(batch: dict):
        return net(constant_maps(batch, ("behavior",)), "mouse0", batch["pupil_center"].permute(0, 2, 1))

    return net, forward


def torch_dwiseneuro(m: ml_collections.ConfigDict, shapes: Shapes):
    """The first-place DwiseNeuro: frames padded to its frame size, every temporal phase of the
    clip through the network as one batch (as ours runs its phases)."""
    import torch
    import torch.nn.functional as F

    from sensorium_jax.port_torch.reference.dwiseneuro import DwiseNeuro

    b = m.blocks
    net = DwiseNeuro((shapes.neurons,), 1 + shapes.behavior + 2, tuple(b.channels), tuple(b.spatial_strides),
                     b.spatial_kernel, b.temporal_kernel, b.expansion_ratio, b.se_reduce_ratio,
                     tuple(m.cortex.channels), int(m.cortex.groups), float(m.readout.softplus_beta))
    fh, fw = m.frame_size
    top, left = (fh - shapes.height) // 2, (fw - shapes.width) // 2
    stride = int(m.temporal_stride)

    def forward(batch: dict):
        video = batch["video"].permute(0, 4, 1, 2, 3)  # [B, 1, T, H, W]
        video = F.pad(video, (left, fw - shapes.width - left, top, fh - shapes.height - top))
        maps = constant_maps({**batch, "video": video.permute(0, 2, 3, 4, 1)}, ("behavior", "pupil_center"))
        phases = torch.cat([maps[:, :, p::stride] for p in range(stride)])  # [stride * B, C, T / stride, H, W]
        out = net(phases, 0)  # [stride * B, N, T / stride]
        out = out.reshape(stride, maps.shape[0], *out.shape[1:]).permute(1, 3, 0, 2)  # [B, T/s, s, N]
        return out.reshape(maps.shape[0], -1, out.shape[-1])

    return net, forward


TORCH_BUILDERS = {
    "factorized": torch_factorized,
    "quickstart": torch_factorized,
    "gru": torch_gru,
    "dwiseneuro": torch_dwiseneuro,
}
