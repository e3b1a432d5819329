"""ResNet-18 and ResNet-50 (torchvision's layer names), untrained unless weights are loaded."""

from __future__ import annotations

import jax
from flax import nnx

from sensorium_jax.atlas.architectures import common


def _bn(c: int, rngs: nnx.Rngs) -> nnx.BatchNorm:
    return nnx.BatchNorm(c, momentum=0.9, epsilon=1e-5, use_running_average=True, rngs=rngs)


class BasicBlock(nnx.Module):
    expansion = 1

    def __init__(self, cin: int, c: int, stride: int, *, rngs: nnx.Rngs):
        init = common.kaiming_fan_out()
        self.conv1 = common.conv(cin, c, 3, stride=stride, pad=1, bias=False, init=init, rngs=rngs)
        self.bn1 = _bn(c, rngs)
        self.conv2 = common.conv(c, c, 3, pad=1, bias=False, init=init, rngs=rngs)
        self.bn2 = _bn(c, rngs)
        needs_down = stride != 1 or cin != c
        self.down = nnx.data(nnx.Sequential(
            common.conv(cin, c, 1, stride=stride, bias=False, init=init, rngs=rngs), _bn(c, rngs)
        ) if needs_down else None)

    def __call__(self, x):
        y = jax.nn.relu(self.bn1(self.conv1(x)))
        y = self.bn2(self.conv2(y))
        return jax.nn.relu(y + (x if self.down is None else self.down(x)))


class Bottleneck(nnx.Module):
    expansion = 4

    def __init__(self, cin: int, c: int, stride: int, *, rngs: nnx.Rngs):
        init = common.kaiming_fan_out()
        cout = c * 4
        self.conv1 = common.conv(cin, c, 1, bias=False, init=init, rngs=rngs)
        self.bn1 = _bn(c, rngs)
        self.conv2 = common.conv(c, c, 3, stride=stride, pad=1, bias=False, init=init, rngs=rngs)
        self.bn2 = _bn(c, rngs)
        self.conv3 = common.conv(c, cout, 1, bias=False, init=init, rngs=rngs)
        self.bn3 = _bn(cout, rngs)
        needs_down = stride != 1 or cin != cout
        self.down = nnx.data(nnx.Sequential(
            common.conv(cin, cout, 1, stride=stride, bias=False, init=init, rngs=rngs), _bn(cout, rngs)
        ) if needs_down else None)

    def __call__(self, x):
        y = jax.nn.relu(self.bn1(self.conv1(x)))
        y = jax.nn.relu(self.bn2(self.conv2(y)))
        y = self.bn3(self.conv3(y))
        return jax.nn.relu(y + (x if self.down is None else self.down(x)))


class ResNet(nnx.Module):
    """Returns the stem's outputs, every block's output (`layerI.J`), `avgpool` and `fc`."""

    def __init__(self, block: type, depths: tuple[int, ...], *, num_classes: int = 1000, rngs: nnx.Rngs):
        self.conv1 = common.conv(3, 64, 7, stride=2, pad=3, bias=False, init=common.kaiming_fan_out(), rngs=rngs)
        self.bn1 = _bn(64, rngs)
        stages, cin = [], 64
        for s, (c, n) in enumerate(zip((64, 128, 256, 512), depths)):
            blocks = []
            for j in range(n):
                blocks.append(block(cin, c, 2 if (j == 0 and s > 0) else 1, rngs=rngs))
                cin = c * block.expansion
            stages.append(nnx.List(blocks))
        self.stages = nnx.List(stages)
        self.fc = nnx.Linear(cin, num_classes, kernel_init=common.torch_default(), rngs=rngs)

    def __call__(self, x):
        out = {}
        x = out["relu"] = jax.nn.relu(self.bn1(self.conv1(x)))
        x = out["maxpool"] = common.max_pool(x, 3, 2, padding=1)
        for s, stage in enumerate(self.stages):
            for j, blk in enumerate(stage):
                x = out[f"layer{s + 1}.{j}"] = blk(x)
        x = out["avgpool"] = x.mean(axis=(1, 2))
        out["fc"] = self.fc(x)
        return out


def resnet18(*, rngs: nnx.Rngs) -> ResNet:
    return ResNet(BasicBlock, (2, 2, 2, 2), rngs=rngs)


def resnet50(*, rngs: nnx.Rngs) -> ResNet:
    return ResNet(Bottleneck, (3, 4, 6, 3), rngs=rngs)
