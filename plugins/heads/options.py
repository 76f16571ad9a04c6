"""The options of the reference heads, one dataclass per head, kept apart from the heads
(without Keras) so that the command line types them without importing any head. The ``dense``
head has no options."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class MLPHeadsConfig:
    """Options of the ``mlp`` head.

    Attributes:
        hidden_units: Sizes of the hidden Dense layers of every task's tower, input side first.
        activation: Activation of the hidden layers (any Keras activation name).
        dropout: Dropout rate after each hidden layer (0: none).
    """

    hidden_units: list[int] = field(default_factory=lambda: [256])
    activation: str = "relu"
    dropout: float = 0.0


@dataclass
class HierarchicalHeadsConfig:
    """Options of the ``hierarchical`` head.

    Attributes:
        mix: Weight of the parent task's own classifier in its prediction, in ``[0, 1]``:
            ``p(parent) = (1 - mix) * sum of child probabilities + mix * softmax(own logits)``.
            0 (default): the parent prediction is derived from the child head alone.
    """

    mix: float = 0.0
