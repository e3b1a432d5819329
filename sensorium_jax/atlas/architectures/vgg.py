"""VGG-16 (torchvision's layer names), untrained unless weights are loaded."""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from sensorium_jax.atlas.architectures import common

VGG16 = (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M")


class VGG(nnx.Module):
    """Returns every module's output, named as torchvision's `features.i` / `classifier.i`."""

    def __init__(self, cfg=VGG16, *, num_classes: int = 1000, rngs: nnx.Rngs):
        self.cfg = tuple(cfg)
        convs, cin = [], 3
        for v in self.cfg:
            if v != "M":
                convs.append(common.conv(cin, v, 3, pad=1, init=common.kaiming_fan_out(), rngs=rngs))
                cin = v
        self.convs = nnx.List(convs)
        init = nnx.initializers.normal(0.01)
        self.fc = nnx.List([
            nnx.Linear(cin * 49, 4096, kernel_init=init, rngs=rngs),
            nnx.Linear(4096, 4096, kernel_init=init, rngs=rngs),
            nnx.Linear(4096, num_classes, kernel_init=init, rngs=rngs),
        ])

    def __call__(self, x: jax.Array) -> dict[str, jax.Array]:
        out, i, c = {}, 0, 0
        for v in self.cfg:
            if v == "M":
                x = out[f"features.{i}"] = common.max_pool(x, 2, 2)
                i += 1
            else:
                out[f"features.{i}"] = x = self.convs[c](x)
                x = out[f"features.{i + 1}"] = jax.nn.relu(x)
                i, c = i + 2, c + 1
        x = out["avgpool"] = common.adaptive_avg_pool(x, 7)
        x = jnp.transpose(x, (0, 3, 1, 2)).reshape(x.shape[0], -1)
        x = out["classifier.0"] = self.fc[0](x)
        x = out["classifier.1"] = jax.nn.relu(x)
        x = out["classifier.3"] = self.fc[1](x)
        x = out["classifier.4"] = jax.nn.relu(x)
        out["classifier.6"] = self.fc[2](x)
        return out
