"""The options of every plugin of this package, one dataclass per plugin.

mtbench imports this module on every command (``--help`` included) to type the command line, so
that a mistyped key or a wrongly typed value fails when Hydra composes; it therefore imports
neither TensorFlow nor Keras. Each plugin's factory gets these fields as keyword arguments.
"""

from __future__ import annotations

from dataclasses import dataclass, field


# task=ordinal (chosen by a dataset's TaskSpec, not on the command line): ordinal.py
@dataclass
class OrdinalOptions:
    """Options of the ``ordinal`` task kind.

    Attributes:
        threshold_weights: The weight of each of the K - 1 thresholds' cross-entropy in the loss
            (CORAL's importance weights); empty: 1 for every threshold.
    """

    threshold_weights: list[float] = field(default_factory=list)


# dataset=ordinal_toy: ordinal_toy.py
@dataclass
class OrdinalToyConfig:
    """Options of the ``ordinal_toy`` dataset.

    Attributes:
        train_size: Training examples.
        val_size: Validation examples (select the best epoch).
        test_size: Test examples.
        missing: Fraction of each task's labels left missing, drawn per task and example.
        noise: Standard deviation of the noise added to both targets' latent value.
        seed: Seeds the features, the targets and which labels are missing.
    """

    train_size: int = 256
    val_size: int = 64
    test_size: int = 64
    missing: float = 0.2
    noise: float = 0.3
    seed: int = 0


# backbone=tiny_mlp: tiny_mlp.py
@dataclass
class TinyMLPConfig:
    """Options of the ``tiny_mlp`` backbone.

    Attributes:
        width: Units of its one hidden layer: the size of the features it outputs.
    """

    width: int = 16


# head=linear: linear.py
@dataclass
class LinearHeadsConfig:
    """Options of the ``linear`` head.

    Attributes:
        use_bias: Give each task's Dense layer a bias.
    """

    use_bias: bool = True


# weighting=half_half: half_half.py
@dataclass
class HalfHalfConfig:
    """Options of the ``half_half`` weighting.

    Attributes:
        first_share: The weight of the first task's loss, in (0, 1); the other tasks share
            ``1 - first_share`` equally.
    """

    first_share: float = 0.5
