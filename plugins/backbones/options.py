"""The options of the reference backbones, one dataclass per backbone.

Kept apart from the backbones, without Keras, so that the command line can type every backbone's
options (a mistyped key or value fails when Hydra composes) without importing any backbone; the
backbone's module is imported when a run builds it. pyproject.toml declares each backbone
(``mtbench.plugins``) and its options (``mtbench.configs``).

An option that is a choice is an Enum whose members are named as the values users type, so that
a wrong value fails when Hydra composes and the message lists the choices; the backbones also
take the values as strings and hold them as plain strings.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum


# backbone=mlp: mlp.py
@dataclass
class MLPBackboneConfig:
    """Options of the ``mlp`` backbone.

    Attributes:
        hidden_units: Sizes of the dense layers, input side first; the last is the feature size.
        activation: Keras activation of every layer.
        dropout: Dropout rate after each layer (0: none).
    """

    hidden_units: list[int] = field(default_factory=lambda: [128, 64])
    activation: str = "relu"
    dropout: float = 0.0


# backbone=resnet: resnet.py
@dataclass
class ResNetConfig:
    """Options of the ``resnet`` backbone.

    Attributes:
        depth: 20, 32, 44, 56 or 110 for the CIFAR ResNets (three stages of basic blocks), 18 for
            ResNet-18 (four stages) with the CIFAR stem.
        width: Channels of the first stage; each later stage doubles them. ``null``: the paper's
            (16 for the CIFAR ResNets, 64 for ResNet-18).
    """

    depth: int = 20
    width: int | None = None


# backbone=resnet9: resnet9.py
class GlobalPool(StrEnum):
    """The choices of ``resnet9``'s ``global_pool`` (:class:`ResNet9Config`)."""

    max = "max"
    avg = "avg"


@dataclass
class ResNet9Config:
    """Options of the ``resnet9`` backbone.

    Attributes:
        width: Channels of the first convolution; the stages have ``2x``, ``4x`` and ``8x`` as
            many (64 gives 64-128-256-512, the DAWNBench network).
        global_pool: ``max`` or ``avg``: how the last 4x4 feature map becomes a vector.
    """

    width: int = 64
    global_pool: GlobalPool = GlobalPool.max


# backbone=wide_resnet: wide_resnet.py
@dataclass
class WideResNetConfig:
    """Options of the ``wide_resnet`` backbone.

    Attributes:
        depth: Total depth ``d``; ``d - 4`` must be divisible by 6 (10, 16, 22, 28, 40, ...).
        widen_factor: ``k``: the three stages have ``16k``, ``32k`` and ``64k`` channels.
        dropout: Dropout rate between the two convolutions of every block (the paper uses 0.3).
    """

    depth: int = 16
    widen_factor: int = 4
    dropout: float = 0.0


# backbone=schnet: schnet.py
class Readout(StrEnum):
    """The choices of ``schnet``'s ``readout`` (:class:`SchNetConfig`)."""

    sum = "sum"
    mean = "mean"
    sum_mean = "sum_mean"


@dataclass
class SchNetConfig:
    """Options of the ``schnet`` backbone (padded molecules ``{"z", "r", "mask"}``).

    Its stages, for the architectures that cut it (``architecture.expert_stages`` counts them):
    the embedding, each interaction block, the readout (``interactions + 2``).

    Attributes:
        hidden: Atom features; the output has as many (twice as many for ``sum_mean``).
        filters: Channels of the continuous filters.
        interactions: Interaction blocks.
        rbf: Gaussian radial basis functions of the distance, centred evenly on [0, cutoff].
        cutoff: Distance in Angstrom beyond which atoms do not interact (cosine cutoff).
        readout: ``sum``, ``mean`` or ``sum_mean`` (both, concatenated) of the atoms' features.
    """

    hidden: int = 64
    filters: int = 64
    interactions: int = 3
    rbf: int = 50
    cutoff: float = 10.0
    readout: Readout = Readout.sum


# backbone=descriptor_mlp: descriptor_mlp.py
@dataclass
class DescriptorMLPConfig:
    """Options of the ``descriptor_mlp`` backbone (padded molecules ``{"z", "r", "mask"}``).

    Its stages, for the architectures that cut it: the descriptor (no variables), then one per
    dense layer (``len(hidden_units) + 1``).

    Attributes:
        elements: Atomic numbers described (other atoms are left out).
        bins: Distance bins per pair of elements.
        max_distance: Centre of the last distance bin, in Angstrom.
        hidden_units: Sizes of the MLP's dense layers; the last is the feature size.
        activation: Keras activation of every dense layer.
        dropout: Dropout rate after each dense layer (0: none).
    """

    elements: list[int] = field(default_factory=lambda: [1, 6, 7, 8, 9])
    bins: int = 32
    max_distance: float = 8.0
    hidden_units: list[int] = field(default_factory=lambda: [256, 128])
    activation: str = "relu"
    dropout: float = 0.0
