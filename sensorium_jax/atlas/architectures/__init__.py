"""Standard architectures in Flax NNX that return their named layers' outputs (torchvision names)."""

from sensorium_jax.atlas.architectures.alexnet import AlexNet
from sensorium_jax.atlas.architectures.resnet import ResNet, resnet18, resnet50
from sensorium_jax.atlas.architectures.vgg import VGG

__all__ = ["AlexNet", "ResNet", "VGG", "resnet18", "resnet50"]
