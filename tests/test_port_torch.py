"""PyTorch checkpoints in, same predictions out.

Reference models of a tiny configuration are built in torch (sensorium_jax.port_torch.reference: the
reference implementations' module structure and parameter names) with random weights,
non-trivial BatchNorm statistics, readout positions on and past the screen border and a
non-zero shifter; their state dict is saved, imported into a workdir (by the command line
once), `load`ed, and must predict what torch predicts on the same normalized inputs.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import jax
import numpy as np
import pytest

torch = pytest.importorskip("torch")

from folders import write_video_folder  # noqa: E402

from sensorium_jax.config import load_config  # noqa: E402
from sensorium_jax.data.convert import convert  # noqa: E402
from sensorium_jax.data.store import open_store  # noqa: E402
from sensorium_jax.errors import InputDataError  # noqa: E402
from sensorium_jax.inference import load  # noqa: E402
from sensorium_jax.port_torch import import_checkpoint  # noqa: E402
from sensorium_jax.port_torch.reference import factorized as ref_factorized  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
FRAME = (10, 14)
NEURONS = (5, 7)
TOLERANCE = 1e-4


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> Path:
    """Two mice of different sizes on 10 x 14 frames."""
    root = tmp_path_factory.mktemp("port_torch")
    folders = [write_video_folder(root / "src", f"mouse-{i}", n_neurons=n, frame_shape=FRAME, seed=i)
               for i, n in enumerate(NEURONS)]
    convert(folders, root / "store", progress=False)
    return root / "store"


def randomize(module: torch.nn.Module, seed: int) -> None:
    """Random weights and BatchNorm statistics far from their initial values."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, tensor in module.state_dict().items():
            fixed = name.endswith(("source_grid", "filter", "inv_freq")) or ".rotate_hermite." in name
            if not tensor.is_floating_point() or fixed:
                continue
            if name.endswith("running_var"):
                tensor.copy_(0.5 + torch.rand(tensor.shape, generator=generator))
            else:
                tensor.copy_(0.5 * torch.randn(tensor.shape, generator=generator))


def inputs(batch: int, frames: int, seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {
        "video": rng.normal(size=(batch, frames, *FRAME, 1)).astype(np.float32),
        "behavior": rng.normal(size=(batch, frames, 2)).astype(np.float32),
        "pupil_center": (2.0 * rng.normal(size=(batch, frames, 2))).astype(np.float32),
    }


def constant_maps(x: dict[str, np.ndarray], keys: tuple[str, ...]) -> torch.Tensor:
    """[B, C, T, H, W]: the video, then each of `keys` as constant maps (channels first)."""
    b, t, h, w, _ = x["video"].shape
    parts = [x["video"][..., 0][:, None]]
    for key in keys:
        v = np.moveaxis(x[key], -1, 1)  # [B, k, T]
        parts.append(np.broadcast_to(v[..., None, None], (*v.shape, h, w)))
    return torch.from_numpy(np.concatenate(parts, axis=1).astype(np.float32))


# --------------------------------------------------------------------------- factorized


def factorized_config(padding: str):
    config = load_config(REPO / "configs" / "factorized_baseline.py")
    core = config.model.core
    core.channels, core.spatial_kernels, core.temporal_kernels = (4, 5), (5, 3), (3, 2)
    core.spatial_padding = padding
    config.model.readout.position_hidden = 6
    config.model.shifter.hidden = (4, 4)
    config.train.steps = 10
    return config


def factorized_reference(store: Path, padding: str) -> ref_factorized.VideoFiringRateEncoder:
    card = open_store(store).card()
    core = ref_factorized.Factorized3dCore(3, [4, 5], 5, 3, 3, 2, padding=padding == "SAME")
    readout = torch.nn.ModuleDict({
        m.name: ref_factorized.FullGaussian2d(5, m.n_neurons, np.asarray(m.coordinates)[:, :2], hidden_features=6)
        for m in card.mice})
    shifter = torch.nn.ModuleDict({m.name: ref_factorized.MLP(2, 4, 3) for m in card.mice})
    model = ref_factorized.VideoFiringRateEncoder(core, readout, shifter)
    randomize(model, seed=1)
    with torch.no_grad():
        for mouse_readout in readout.values():  # positions saturate towards the border
            mouse_readout.mu_transform[2].weight.mul_(6.0)
        for mouse_shifter in shifter.values():  # shifts up to ~0.6 carry positions past it
            mouse_shifter.mlp[4].bias.copy_(torch.tensor([0.6, -0.5]))
    return model.eval()


def torch_factorized(model, x: dict[str, np.ndarray], card, mouse: int) -> np.ndarray:
    with torch.no_grad():
        out = model(constant_maps(x, ("behavior",)), card.mice[mouse].name,
                    torch.from_numpy(np.moveaxis(x["pupil_center"], -1, 1).copy()))
    return out.numpy()


def positions_past_border(model, card, x: dict[str, np.ndarray], mouse: int) -> float:
    """The largest |grid coordinate| the reference samples at (> 1: past the border)."""
    name = card.mice[mouse].name
    with torch.no_grad():
        mu = model.readout[name].mu.reshape(-1, 2)
        shift = model.shifter[name](torch.from_numpy(x["pupil_center"].reshape(-1, 2)))
    return float((mu[None] + shift[:, None]).abs().max())


def save(model: torch.nn.Module, path: Path, state: dict | None = None) -> Path:
    torch.save(model.state_dict() if state is None else state, path)
    return path


def assert_same_predictions(reference_fn, predictor, card, frames: int) -> float:
    """Both mice, 3 clips each, through `Predictor.apply` (compiled once) and the reference."""
    apply = jax.jit(predictor.apply)
    worst = 0.0
    for mouse in range(len(card.mice)):
        x = inputs(3, frames, seed=10 + mouse)
        want = reference_fn(x, mouse)
        batch = {**x, "mouse": np.full(3, mouse, np.int32)}
        got = np.asarray(apply(predictor.variables, batch))[..., : card.mice[mouse].n_neurons]
        assert got.shape == want.shape
        np.testing.assert_allclose(got, want, rtol=TOLERANCE, atol=TOLERANCE)
        worst = max(worst, float(np.max(np.abs(got - want))))
    return worst


def test_factorized_command_line_import_predicts_like_torch(store, tmp_path):
    model = factorized_reference(store, "SAME")
    card = open_store(store).card()
    x = inputs(3, 9, seed=10)
    assert positions_past_border(model, card, x, 0) > 1.05  # the border's zero padding is exercised
    state = save(model, tmp_path / "factorized.pt")
    overrides = ["--config.model.core.channels=(4,5)", "--config.model.core.spatial_kernels=(5,3)",
                 "--config.model.core.temporal_kernels=(3,2)", "--config.model.core.spatial_padding=SAME",
                 "--config.model.readout.position_hidden=6", "--config.model.shifter.hidden=(4,4)"]
    result = subprocess.run(
        [sys.executable, "-m", "sensorium_jax.port_torch", "--state-dict", str(state),
         "--config", str(REPO / "configs" / "factorized_baseline.py"), *overrides,
         "--store", str(store), "--out", str(tmp_path / "run")],
        capture_output=True, text=True, cwd=tmp_path, timeout=300,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    predictor = load(tmp_path / "run")
    assert predictor.frames_lost == 3
    worst = assert_same_predictions(lambda x, m: torch_factorized(model, x, card, m), predictor, card, 9)
    print(f"factorized SAME: max abs difference {worst:.2e}")


def test_factorized_unpadded_core_predicts_like_torch(store, tmp_path):
    model = factorized_reference(store, "VALID")
    card = open_store(store).card()
    state = save(model, tmp_path / "factorized.pt")
    import_checkpoint(state, factorized_config("VALID"), store, tmp_path / "run")
    worst = assert_same_predictions(lambda x, m: torch_factorized(model, x, card, m), load(tmp_path / "run"),
                                    card, 9)
    print(f"factorized VALID: max abs difference {worst:.2e}")
    with pytest.raises(InputDataError, match="--out: expected a new or empty workdir"):
        import_checkpoint(state, factorized_config("VALID"), store, tmp_path / "run")  # nothing overwritten


@pytest.mark.parametrize("damage, key, found", [
    ("drop", "core.features.layer1.conv_temporal_1.bias", "missing"),
    ("extra", "readout.mouse-0.extra_weight", "an unknown key"),
    ("reshape", "readout.mouse-1._features", "shape (1, 5, 1, 6)"),
    ("rename_mouse", "shifter.mouse-9.mlp.0.weight", "an unknown mouse"),
])
def test_bad_state_dicts_are_one_line_errors_naming_the_key(store, tmp_path, damage, key, found):
    state = factorized_reference(store, "VALID").state_dict()
    if damage == "drop":
        del state[key]
    elif damage == "extra":
        state[key] = torch.zeros(3)
    elif damage == "reshape":
        state[key] = state[key][..., :6].clone()
    else:
        for name in [k for k in state if k.startswith("shifter.mouse-1.")]:
            state[name.replace("mouse-1", "mouse-9")] = state.pop(name)
    path = torch.save(state, tmp_path / "bad.pt") or tmp_path / "bad.pt"
    with pytest.raises(InputDataError) as error:
        import_checkpoint(path, factorized_config("VALID"), store, tmp_path / "run")
    message = str(error.value)
    assert "\n" not in message and key in message and found in message
    assert not (tmp_path / "run" / "checkpoints").exists()


def test_code_in_the_file_is_not_run(store, tmp_path):
    """A pickle that would call a function on loading is refused by the safe reader."""
    import pickle

    marker = tmp_path / "ran"

    class Payload:
        def __reduce__(self):
            return (Path.touch, (marker,))

    path = tmp_path / "evil.pt"
    torch.save({"core.x": Payload()}, path, pickle_module=pickle)
    with pytest.raises(InputDataError, match="weights_only"):
        import_checkpoint(path, factorized_config("VALID"), store, tmp_path / "run")
    assert not marker.exists()


# --------------------------------------------------------------------------- DwiseNeuro

DWISE = {"clip": 8, "stride": 2, "frame": (16, 16), "blocks": (8, 16, 16), "strides": (2, 2, 1), "cortex": (32, 64)}


def dwiseneuro_config():
    config = load_config(REPO / "configs" / "dwiseneuro.py")
    model = config.model
    model.clip_length, model.temporal_stride, model.frame_size = DWISE["clip"], DWISE["stride"], DWISE["frame"]
    model.stem.channels = DWISE["blocks"][0]
    model.blocks.channels, model.blocks.spatial_strides = DWISE["blocks"], DWISE["strides"]
    model.blocks.expansion_ratio, model.blocks.temporal_kernel, model.blocks.se_reduce_ratio = 2, 3, 4
    model.cortex.channels = DWISE["cortex"]
    config.data.clip_length = DWISE["clip"]
    config.data.batch_size = 8
    config.train.steps = 10
    return config


def dwiseneuro_reference(card, order: tuple[int, ...]):
    """Readouts in the given order of the store's mice (the reference numbers them)."""
    from sensorium_jax.port_torch.reference.dwiseneuro import DwiseNeuro

    model = DwiseNeuro(tuple(card.mice[i].n_neurons for i in order), 5, DWISE["blocks"], DWISE["strides"], 3, 3, 2, 4,
                       DWISE["cortex"], 2, 0.07)
    randomize(model, seed=2)
    return model.eval()


def torch_dwiseneuro(model, x: dict[str, np.ndarray], readout: int) -> np.ndarray:
    """Every phase of the clip (frames p, p + stride, ...) through the reference; interleaved."""
    video = x["video"]
    (fh, fw), (h, w) = DWISE["frame"], video.shape[2:4]
    top, left = (fh - h) // 2, (fw - w) // 2
    padded = np.zeros((*video.shape[:2], fh, fw, 1), np.float32)
    padded[:, :, top: top + h, left: left + w] = video
    full = constant_maps({**x, "video": padded}, ("behavior", "pupil_center"))
    out = np.zeros((video.shape[0], video.shape[1], model.readouts[readout].n), np.float32)
    with torch.no_grad():
        for p in range(DWISE["stride"]):
            out[:, p:: DWISE["stride"]] = model(full[:, :, p:: DWISE["stride"]], readout).numpy().transpose(0, 2, 1)
    return out


def test_dwiseneuro_import_predicts_like_torch(store, tmp_path):
    card = open_store(store).card()
    order = (1, 0)  # the reference's readouts.0 is the store's second mouse
    model = dwiseneuro_reference(card, order)
    state = save(model, tmp_path / "dwiseneuro.pt", {"nn_state_dict": model.state_dict(), "params": {"a": 1}})
    names = [card.mice[i].name for i in order]
    import_checkpoint(state, dwiseneuro_config(), store, tmp_path / "run", mice=names)
    predictor = load(tmp_path / "run")
    worst = assert_same_predictions(lambda x, m: torch_dwiseneuro(model, x, order.index(m)), predictor, card,
                                    DWISE["clip"])
    print(f"dwiseneuro: max abs difference {worst:.2e}")


def test_dwiseneuro_readout_of_a_mouse_the_store_lacks_is_refused(store, tmp_path):
    card = open_store(store).card()
    state = save(dwiseneuro_reference(card, (0, 1)), tmp_path / "dwiseneuro.pt")
    with pytest.raises(InputDataError, match=r"readouts\.0: .*mouse dynamic29515"):
        import_checkpoint(state, dwiseneuro_config(), store, tmp_path / "run")  # the reference's own mice


# --------------------------------------------------------------------------- GRU baseline

GRU = {"channels": 2, "rotations": 4, "input_kern": 5, "hidden_kern": 3, "layers": 2, "gru": 4}


def gru_config():
    config = load_config(REPO / "configs" / "gru_baseline.py")
    model = config.model
    model.core.type = "rotation_equivariant"
    model.core.channels = (GRU["channels"],) * GRU["layers"]
    model.core.rotations = GRU["rotations"]
    model.core.input_kernel, model.core.hidden_kernel = GRU["input_kern"], GRU["hidden_kern"]
    model.gru.channels, model.gru.input_kernel, model.gru.recurrent_kernel = GRU["gru"], 3, 3
    model.readout.position_hidden = 6
    model.shifter.hidden = (4, 4)
    config.train.steps = 10
    return config


def gru_reference(store: Path):
    from sensorium_jax.port_torch.reference import gru as ref_gru

    card = open_store(store).card()
    core = ref_gru.RotationEquivariant2dCore(3, GRU["channels"], GRU["input_kern"], GRU["hidden_kern"], GRU["layers"],
                                             GRU["rotations"])
    gru = ref_gru.GRU_Module(GRU["channels"] * GRU["rotations"], GRU["gru"], 3, 3)
    readout = torch.nn.ModuleDict({
        m.name: ref_factorized.FullGaussian2d(GRU["gru"], m.n_neurons, np.asarray(m.coordinates)[:, :2], 6)
        for m in card.mice})
    shifter = torch.nn.ModuleDict({m.name: ref_factorized.MLP(2, 4, 3) for m in card.mice})
    model = ref_gru.VideoFiringRateEncoder2d(core, readout, shifter, gru)
    randomize(model, seed=3)
    with torch.no_grad():
        for mouse_readout in readout.values():
            mouse_readout.mu_transform[2].weight.mul_(6.0)
        for mouse_shifter in shifter.values():
            mouse_shifter.mlp[4].bias.copy_(torch.tensor([-0.6, 0.5]))
    return model.eval()


def test_gru_import_predicts_like_torch(store, tmp_path):
    model = gru_reference(store)
    card = open_store(store).card()
    state = save(model, tmp_path / "gru.pt")
    assert any(".rotate_hermite.H" in key for key in model.state_dict())
    import_checkpoint(state, gru_config(), store, tmp_path / "run")
    predictor = load(tmp_path / "run")
    assert predictor.frames_lost == 0
    worst = assert_same_predictions(lambda x, m: torch_factorized(model, x, card, m), predictor, card, 6)
    print(f"gru: max abs difference {worst:.2e}")


def test_gru_with_another_hermite_basis_is_refused(store, tmp_path):
    state = gru_reference(store).state_dict()
    key = "core.features.layer1.hermite_conv.rotate_hermite.Rs.1"
    state[key] = state[key].T.clone()  # rotations the other way round
    path = tmp_path / "gru.pt"
    torch.save(state, path)
    with pytest.raises(InputDataError, match=key.replace(".", r"\.")):
        import_checkpoint(path, gru_config(), store, tmp_path / "run")
