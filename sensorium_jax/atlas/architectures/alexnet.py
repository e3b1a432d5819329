"""AlexNet (torchvision's variant and layer names), untrained unless weights are loaded."""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from sensorium_jax.atlas.architectures import common

# (cin, cout, kernel, stride, pad) of features.0, .3, .6, .8, .10
_CONVS = ((3, 64, 11, 4, 2), (64, 192, 5, 1, 2), (192, 384, 3, 1, 1), (384, 256, 3, 1, 1), (256, 256, 3, 1, 1))
_POOL_AFTER = {0, 1, 4}


class AlexNet(nnx.Module):
    """Returns every module's output, named as torchvision's `features.i` / `classifier.i`."""

    def __init__(self, *, num_classes: int = 1000, rngs: nnx.Rngs):
        self.convs = nnx.List([common.conv(ci, co, k, stride=s, pad=p, rngs=rngs) for ci, co, k, s, p in _CONVS])
        init = common.torch_default()
        self.fc = nnx.List([
            nnx.Linear(256 * 36, 4096, kernel_init=init, rngs=rngs),
            nnx.Linear(4096, 4096, kernel_init=init, rngs=rngs),
            nnx.Linear(4096, num_classes, kernel_init=init, rngs=rngs),
        ])

    def __call__(self, x: jax.Array) -> dict[str, jax.Array]:
        out, i = {}, 0
        for c, conv in enumerate(self.convs):
            x = conv(x)
            out[f"features.{i}"] = x
            x = out[f"features.{i + 1}"] = jax.nn.relu(x)
            i += 2
            if c in _POOL_AFTER:
                x = out[f"features.{i}"] = common.max_pool(x, 3, 2)
                i += 1
        x = out["avgpool"] = common.adaptive_avg_pool(x, 6)
        x = jnp.transpose(x, (0, 3, 1, 2)).reshape(x.shape[0], -1)  # torch's C, H, W order
        x = out["classifier.1"] = self.fc[0](x)  # dropout (classifier.0) is the identity in eval
        x = out["classifier.2"] = jax.nn.relu(x)
        x = out["classifier.4"] = self.fc[1](x)
        x = out["classifier.5"] = jax.nn.relu(x)
        out["classifier.6"] = self.fc[2](x)
        return out
