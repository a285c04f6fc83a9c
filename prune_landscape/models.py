"""Built-in models for tests, recipes and the demo.

Every built-in model carries its own initialiser, ``init_weights(generator=None)``, so that methods which
re-draw the network from its init distribution (NTK-SAP) do so exactly as the paper's code does.

Example:
    >>> from prune_landscape import models
    >>> net = models.resnet20()
    >>> sum(p.numel() for n, p in net.named_parameters() if n.endswith("weight") and p.dim() > 1)
    270896
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence

import torch
from torch import nn

from prune_landscape.pruning.reinit import redraw_initial_weights, reset_every_module

__all__ = [
    "ACTIVATIONS",
    "MODELS",
    "build_model",
    "MLP",
    "LeNet",
    "ResNet20",
    "VGG16BN",
    "init_kaiming_normal",
    "lenet",
    "mlp",
    "resnet18",
    "resnet20",
    "resnet50",
    "vgg16_bn",
]

#: Activation names accepted by :func:`mlp`; ``"linear"`` means no activation (an ``nn.Identity``).
ACTIVATIONS: dict[str, type[nn.Module]] = {
    "relu": nn.ReLU,
    "linear": nn.Identity,
    "tanh": nn.Tanh,
    "sigmoid": nn.Sigmoid,
    "gelu": nn.GELU,
    "silu": nn.SiLU,
    "softplus": nn.Softplus,
    "leaky_relu": nn.LeakyReLU,
}


def init_kaiming_normal(model: nn.Module, generator: torch.Generator | None = None) -> None:
    """Kaiming-normal (fan_in, gain sqrt(2)) conv/linear weights; BN gamma=1, beta=0; biases untouched.

    This is the initialisation of OpenLTH's CIFAR ResNets and the one NTK-SAP re-draws before every
    noise batch.
    """
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)):
                fan_in = module.weight[0].numel()
                std = (2.0 / fan_in) ** 0.5
                module.weight.copy_(torch.randn(module.weight.shape, generator=generator) * std)
            elif isinstance(module, nn.modules.batchnorm._BatchNorm):
                if module.weight is not None:
                    module.weight.fill_(1.0)
                    module.bias.zero_()


def _reset_default(model: nn.Module, generator: torch.Generator | None) -> None:
    # PyTorch's own initialisers, re-drawn by the package's one re-draw function; without a generator the
    # seed comes from the global RNG, so torch.manual_seed still decides.
    seed = generator if generator is not None else int(torch.randint(0, 2**62, (1,)))
    redraw_initial_weights(model, seed, init_fn=reset_every_module)


class MLP(nn.Sequential):
    """Fully connected network ``widths[0] -> widths[1] -> ... -> widths[-1]``; layers ``fc1..fcL``.

    The input is flattened first, so image batches work directly. ``activation="linear"`` inserts
    ``nn.Identity`` modules, which the audit reads as a linear network.
    """

    def __init__(self, widths: Sequence[int], activation: str = "relu", bias: bool = True):
        widths = [int(w) for w in widths]
        if len(widths) < 2 or any(w < 1 for w in widths):
            raise ValueError(f"widths must list >= 2 positive sizes (input, ..., output), got {widths}")
        if activation not in ACTIVATIONS:
            raise ValueError(f"unknown activation {activation!r}; expected one of {sorted(ACTIVATIONS)}")
        layers: list[tuple[str, nn.Module]] = [("flatten", nn.Flatten())]
        for index, (fan_in, fan_out) in enumerate(zip(widths[:-1], widths[1:]), start=1):
            layers.append((f"fc{index}", nn.Linear(fan_in, fan_out, bias=bias)))
            if index < len(widths) - 1:
                layers.append((f"act{index}", ACTIVATIONS[activation]()))
        super().__init__(OrderedDict(layers))
        self.widths = tuple(widths)
        self.activation = activation

    def init_weights(self, generator: torch.Generator | None = None) -> None:
        """PyTorch's default Linear init (kaiming-uniform a=sqrt(5)), drawn from ``generator``."""
        _reset_default(self, generator)


def mlp(widths: Sequence[int], activation: str = "relu", bias: bool = True) -> MLP:
    """An :class:`MLP`, e.g. ``mlp([784, 100, 100, 10])``."""
    return MLP(widths, activation=activation, bias=bias)


class LeNet(nn.Module):
    """LeNet-5-style conv net: two 5x5 convs (padding 2) with max-pooling, then fc 120 -> 84 -> classes."""

    def __init__(self, in_channels: int = 1, num_classes: int = 10, image_size: int = 28):
        super().__init__()
        if image_size < 4:
            raise ValueError(f"image_size must be >= 4 (two 2x2 poolings), got {image_size}")
        self.conv1 = nn.Conv2d(in_channels, 6, 5, padding=2)
        self.conv2 = nn.Conv2d(6, 16, 5, padding=2)
        side = image_size // 2 // 2
        self.fc1 = nn.Linear(16 * side * side, 120)
        self.fc2 = nn.Linear(120, 84)
        self.fc3 = nn.Linear(84, num_classes)
        self.relu = nn.ReLU()
        self.pool = nn.MaxPool2d(2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool(self.relu(self.conv1(x)))
        x = self.pool(self.relu(self.conv2(x)))
        x = torch.flatten(x, 1)
        x = self.relu(self.fc1(x))
        x = self.relu(self.fc2(x))
        return self.fc3(x)

    def init_weights(self, generator: torch.Generator | None = None) -> None:
        """PyTorch's default init, drawn from ``generator``."""
        _reset_default(self, generator)


def lenet(in_channels: int = 1, num_classes: int = 10, image_size: int = 28) -> LeNet:
    """A :class:`LeNet` for ``image_size`` x ``image_size`` inputs (28 for MNIST, 8 for digits)."""
    return LeNet(in_channels, num_classes, image_size)


class _BasicBlock(nn.Module):
    def __init__(self, in_channels: int, out_channels: int, downsample: bool):
        super().__init__()
        stride = 2 if downsample else 1
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.relu = nn.ReLU()
        if downsample or in_channels != out_channels:
            self.shortcut: nn.Module = nn.Sequential(
                nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=False),
                nn.BatchNorm2d(out_channels),
            )
        else:
            self.shortcut = nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + self.shortcut(x))


class ResNet20(nn.Module):
    """The CIFAR ResNet-20 of OpenLTH and NTK-SAP.

    Stem conv 3->16 + BN; 3 stages x 3 basic blocks at 16/32/64 channels; 1x1 conv + BN shortcuts at the
    two downsampling blocks, identity elsewhere; global average pooling; ``fc`` 64 -> classes.
    22 prunable tensors, 270,896 weights; kaiming-normal fan_in init.
    """

    def __init__(self, num_classes: int = 10, in_channels: int = 3, width: int = 16):
        super().__init__()
        self.conv = nn.Conv2d(in_channels, width, 3, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(width)
        blocks: list[nn.Module] = []
        channels = width
        for stage, stage_width in enumerate((width, 2 * width, 4 * width)):
            for index in range(3):
                blocks.append(_BasicBlock(channels, stage_width, downsample=stage > 0 and index == 0))
                channels = stage_width
        self.blocks = nn.Sequential(*blocks)
        self.relu = nn.ReLU()
        self.fc = nn.Linear(channels, num_classes)
        self.init_weights()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn(self.conv(x)))
        out = self.blocks(out)
        out = torch.flatten(nn.functional.adaptive_avg_pool2d(out, 1), 1)
        return self.fc(out)

    def init_weights(self, generator: torch.Generator | None = None) -> None:
        """Kaiming-normal fan_in weights, BN gamma=1 and beta=0 (:func:`init_kaiming_normal`)."""
        init_kaiming_normal(self, generator)


def resnet20(num_classes: int = 10, in_channels: int = 3) -> ResNet20:
    """The CIFAR :class:`ResNet20`."""
    return ResNet20(num_classes=num_classes, in_channels=in_channels)


_VGG16 = (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512)


class VGG16BN(nn.Module):
    """CIFAR VGG-16 with BatchNorm (OpenLTH's variant): 13 conv3x3+BN+ReLU, 2x2 average pool, ``fc``."""

    def __init__(self, num_classes: int = 10, in_channels: int = 3):
        super().__init__()
        layers: list[nn.Module] = []
        channels = in_channels
        for item in _VGG16:
            if item == "M":
                layers.append(nn.MaxPool2d(2))
            else:
                layers += [nn.Conv2d(channels, int(item), 3, padding=1), nn.BatchNorm2d(int(item)), nn.ReLU()]
                channels = int(item)
        self.features = nn.Sequential(*layers)
        self.fc = nn.Linear(channels, num_classes)
        self.init_weights()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.features(x)
        out = torch.flatten(nn.functional.adaptive_avg_pool2d(out, 1), 1)
        return self.fc(out)

    def init_weights(self, generator: torch.Generator | None = None) -> None:
        """Kaiming-normal fan_in weights, BN gamma=1 and beta=0."""
        init_kaiming_normal(self, generator)


def vgg16_bn(num_classes: int = 10, in_channels: int = 3) -> VGG16BN:
    """The CIFAR :class:`VGG16BN`."""
    return VGG16BN(num_classes=num_classes, in_channels=in_channels)


def _torchvision_resnet(name: str, num_classes: int, small_input: bool) -> nn.Module:
    import torchvision

    model = getattr(torchvision.models, name)(weights=None, num_classes=num_classes)
    if small_input:
        # CIFAR-style stem: 3x3 stride-1 conv and no max-pool, as in most pruning papers' ResNet-18.
        model.conv1 = nn.Conv2d(3, 64, 3, stride=1, padding=1, bias=False)
        model.maxpool = nn.Identity()
    return model


def resnet18(num_classes: int = 1000, small_input: bool = False) -> nn.Module:
    """torchvision's ResNet-18 (``small_input=True``: 3x3 stem without max-pool, for 32x32/64x64 images)."""
    return _torchvision_resnet("resnet18", num_classes, small_input)


def resnet50(num_classes: int = 1000, small_input: bool = False) -> nn.Module:
    """torchvision's ResNet-50 (``small_input=True``: 3x3 stem without max-pool)."""
    return _torchvision_resnet("resnet50", num_classes, small_input)


#: Built-in model builders by name (what configs and the CLI accept).
MODELS = {
    "mlp": mlp,
    "lenet": lenet,
    "resnet20": resnet20,
    "vgg16_bn": vgg16_bn,
    "resnet18": resnet18,
    "resnet50": resnet50,
}


def build_model(name: str, **kwargs) -> nn.Module:
    """Build a built-in model by name, e.g. ``build_model("mlp", widths=[64, 32, 10])``.

    Raises:
        ValueError: listing the valid names when ``name`` is unknown.
    """
    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}; expected one of {sorted(MODELS)}")
    return MODELS[name](**kwargs)
