"""The ``hierarchical`` head: the coarse prediction is the fine prediction summed per superclass."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from mtbench.data import TaskHierarchy
from mtbench.model import task_seed
from mtbench.tasks import TaskSpec

log = logging.getLogger(__name__)


@keras.saving.register_keras_serializable(package="mtbench_plugins")
class HierarchicalHeads(keras.layers.Layer):
    """Dense classifiers in which the parent task of a hierarchy is predicted through its child.

    For the hierarchy's child task (e.g. ``fine``) a ``Dense`` layer gives logits ``z``. The
    parent task (e.g. ``coarse``) gets the log of the child probabilities summed over each
    parent class ``j``::

        derived_j = log sum_{c: parent_of[c] = j} softmax(z)_c
                  = logsumexp_{c: parent_of[c] = j} z_c - logsumexp_c z_c

    computed in float32 by a masked logsumexp (exact even where a superclass's probability
    underflows). These are log-probabilities, so ``softmax(derived) = exp(derived)`` is exactly
    the summed child probabilities, and a cross-entropy on the parent task trains the child
    classifier to put its probability mass in the right superclass. With ``0 < mix``, the parent
    task also has its own ``Dense`` classifier with logits ``y``, and its output is the mixture
    ``log((1 - mix) * exp(derived) + mix * softmax(y))`` (again log-probabilities; ``mix=1`` is
    the plain classifier, as log-softmax).

    Tasks outside the hierarchy get plain ``Dense`` classifiers. Without a hierarchy, or when
    the run does not train both of its tasks (a single-task baseline), every task gets a plain
    ``Dense`` classifier: the head degrades to ``dense`` so that a benchmark's single-task
    baselines run with the same head option as its joint model.

    Args:
        tasks: The tasks to predict (``TaskSpec`` or its ``get_config()`` dict).
        hierarchy: The dataset's ``TaskHierarchy`` (or its ``get_config()`` form: a dict with
            ``child``, ``parent`` and ``parent_of`` as a list), or ``None``.
        mix: Weight of the parent's own classifier, in ``[0, 1]``.
        seed: Seeds each task's classifier from this and the task's name (see
            :func:`mtbench.model.task_seed`), as ``dense`` does: the child's classifier, and the
            parent's own one, start as in a single-task run. ``None``: Keras's unseeded
            initialisers.

    Example:
        >>> hierarchy = TaskHierarchy("fine", "coarse", np.array([0, 0, 1, 1, 1]))
        >>> heads = HierarchicalHeads([TaskSpec("fine", 5), TaskSpec("coarse", 2)], hierarchy)
        >>> out = heads(keras.ops.zeros((8, 64)))
        >>> np.exp(out["coarse"][0])  # [2/5, 3/5]: the fine probabilities summed per superclass
    """

    def __init__(
        self,
        tasks: Sequence[TaskSpec | Mapping[str, Any]],
        hierarchy: TaskHierarchy | Mapping[str, Any] | None = None,
        mix: float = 0.0,
        seed: int | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.tasks = [TaskSpec.coerce(t) for t in tasks]
        self.hierarchy = _coerce_hierarchy(hierarchy)
        self.mix = float(mix)
        self.seed = None if seed is None else int(seed)
        if not 0.0 <= self.mix <= 1.0:
            raise ValueError(f"head.mix={mix} must be in [0, 1]")
        if self.hierarchy is None:
            raise ValueError(
                "head=hierarchical needs a dataset that declares a label hierarchy (a "
                "fine-to-coarse map), and this dataset has none; use head=dense or head=mlp"
            )
        by_name = {t.name: t for t in self.tasks}
        h = self.hierarchy
        # the hierarchy this head applies: only where the run trains both of its tasks
        self._linked = h if h is not None and {h.child, h.parent} <= set(by_name) else None
        if self._linked is not None:
            child, parent = by_name[self._linked.child], by_name[self._linked.parent]
            _check_hierarchy(self._linked, child, parent)
            self._num_parents = parent.num_classes
        else:
            log.info(
                "hierarchical head: this run does not train both %s and %s; every task gets a "
                "plain dense classifier",
                h.child, h.parent,
            )  # fmt: skip
        derived_only = self._linked.parent if self._linked and self.mix == 0.0 else None
        self.classifiers = {
            t.name: keras.layers.Dense(
                t.units,
                kernel_initializer=keras.initializers.GlorotUniform(
                    task_seed(self.seed, t.name, "logits")
                ),
                name=f"{t.name}_logits",
                dtype=self.dtype_policy,
            )
            for t in self.tasks
            if t.name != derived_only
        }

    def build(self, input_shape: tuple[int | None, ...]) -> None:
        for classifier in self.classifiers.values():
            classifier.build(input_shape)
        self.built = True

    def call(self, features: Any, training: bool = False) -> dict[str, Any]:
        own = {name: classifier(features) for name, classifier in self.classifiers.items()}
        h = self._linked
        if h is None:
            return own
        derived = _log_mass_per_parent(own[h.child], h.parent_of, self._num_parents)
        if self.mix == 0.0:
            parent = derived
        else:
            own_log_probs = tf.nn.log_softmax(tf.cast(own[h.parent], tf.float32))
            if self.mix == 1.0:
                parent = own_log_probs
            else:
                parent = tf.reduce_logsumexp(
                    tf.stack(
                        [
                            derived + float(np.log1p(-self.mix)),
                            own_log_probs + float(np.log(self.mix)),
                        ]
                    ),
                    axis=0,
                )
        return {t.name: parent if t.name == h.parent else own[t.name] for t in self.tasks}

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        h = self.hierarchy
        config.update(
            tasks=[t.get_config() for t in self.tasks],
            hierarchy=None
            if h is None
            else {
                "child": h.child,
                "parent": h.parent,
                "parent_of": [int(p) for p in h.parent_of],
            },
            mix=self.mix,
            seed=self.seed,
        )
        return config


def _log_mass_per_parent(child_logits: Any, parent_of: np.ndarray, num_parents: int) -> tf.Tensor:
    """``log sum_{c in j} softmax(z)_c`` for every parent ``j``, in float32: [batch, parents]."""
    logits = tf.cast(child_logits, tf.float32)
    member = np.asarray(parent_of)[:, None] == np.arange(num_parents)[None, :]  # [child, parent]
    outside = tf.constant(np.where(member, 0.0, -np.inf), tf.float32)
    per_parent = tf.reduce_logsumexp(logits[:, :, None] + outside[None], axis=1)
    return per_parent - tf.reduce_logsumexp(logits, axis=1, keepdims=True)


def _coerce_hierarchy(value: TaskHierarchy | Mapping[str, Any] | None) -> TaskHierarchy | None:
    if value is None or isinstance(value, TaskHierarchy):
        return value
    return TaskHierarchy(
        child=str(value["child"]),
        parent=str(value["parent"]),
        parent_of=np.asarray(value["parent_of"], dtype=np.int64),
    )


def _check_hierarchy(hierarchy: TaskHierarchy, child: TaskSpec, parent: TaskSpec) -> None:
    parent_of = np.asarray(hierarchy.parent_of)
    where = f"the hierarchy {child.name} -> {parent.name}"
    kinds = {child.kind, parent.kind}
    if kinds != {"classification"}:
        raise ValueError(f"{where}: both tasks must be classification tasks, not {sorted(kinds)}")
    if parent_of.shape != (child.num_classes,):
        raise ValueError(
            f"{where}: parent_of has shape {parent_of.shape}; it needs one parent class for each "
            f"of the {child.num_classes} '{child.name}' classes"
        )
    if not np.issubdtype(parent_of.dtype, np.integer):
        raise ValueError(f"{where}: parent_of must hold integers, not {parent_of.dtype}")
    if parent_of.min() < 0 or parent_of.max() >= parent.num_classes:
        raise ValueError(
            f"{where}: parent_of holds classes outside 0..{parent.num_classes - 1} "
            f"(min {parent_of.min()}, max {parent_of.max()})"
        )
    empty = sorted(set(range(parent.num_classes)) - set(parent_of.tolist()))
    if empty:
        raise ValueError(
            f"{where}: the '{parent.name}' classes {empty} have no '{child.name}' class; the "
            "hierarchical head cannot predict them"
        )
