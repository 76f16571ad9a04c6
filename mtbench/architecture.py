"""Sharing architectures: how the joint model shares parameters between tasks.

An **architecture plugin** (kind ``architecture``, chosen with ``architecture=<name>``) is a
factory called as ``factory(parts=ModelParts, preprocessing=layer_or_None, **options)`` that
returns a :class:`~mtbench.model.MultiTaskNetwork` (not yet built). :class:`ModelParts` holds
what it assembles: the backbone and head plugin configs (it builds fresh instances on request),
the tasks, the shape of the preprocessed inputs and the seed. The network declares its shared
variables, its task variables and whether every head reads one representation
(:class:`~mtbench.model.MultiTaskNetwork`); :func:`check_weighting` refuses a weighting method
that cannot train it. Architectures made of parts subclass :class:`ComposedNetwork`, which
serialises them by their parts and options.

Single-task baselines always use hard sharing of their one task (the plain backbone and head):
every architecture is compared with the same single-task networks.

**Backbone stages.** Architectures that cut a backbone (cross-stitch units after every stage,
MTAN's attention on stage outputs, experts made of the last stages over a shared bottom) need
the backbone to implement ``stages() -> list[keras.layers.Layer]``:

- the stages in order, such that applying them in turn, each with the same ``training`` flag,
  is the backbone's ``call`` (the reference backbones' ``call`` is exactly that loop);
- each stage owns its sublayers and variables and answers ``compute_output_shape`` before it
  is built, so an architecture can take some stages of one backbone instance and leave the
  others unused (never built: they create no variables);
- ``stages()`` returns the same layer objects every time. :class:`Chain` makes a stage of
  existing layers.

The first stage reads the backbone's inputs (one tensor, or the dataset's dict of input arrays)
and the last returns the backbone's features (one tensor). **What passes between two stages**
(the *state*) is one tensor ``[batch, ...]``, or, for a backbone that needs more than one tensor
from stage to stage (a molecule's atoms and its geometry), a dict:

- ``state["features"]`` (:data:`FEATURES`): the one tensor ``[batch, ...]`` that architectures
  act on. Cross-stitch units mix it, experts' outputs are mixed by it, MTAN's masks gate it,
  gates read it; the next stage reads it as the previous stage left it or as the architecture
  changed it.
- ``state["mask"]`` (:data:`MASK`, optional): ``[batch, elements]``, 1 for the real elements and
  0 for padding, when ``features`` is a padded set ``[batch, elements, channels]`` (a molecule's
  atoms, points, tokens). Gates then read the features averaged over the real elements
  (:func:`pooled_features`: invariant, as the backbone is, to the order of the elements and the
  amount of padding); MTAN pools and normalises over the real elements only. A backbone keeps
  ``features`` at 0 on padded elements.
- Every other entry is *context* the later stages need (e.g. interatomic distances), a function
  of the backbone's inputs alone that no trainable variable reaches; ``mask`` is context too.
  A stage that reads a state passes its context on unchanged (the same entries and values) or
  ends the state (returns one tensor), so every copy of a backbone carries the same context for
  the same inputs. Architectures change ``features`` only (:func:`with_features`) and carry the
  context over unchanged, from any one of the states they combine.

The dataset's dict of inputs is not a state (it has no ``features``): gates never read it, so
experts over whole backbones (``expert_stages=null``) need inputs that are one tensor.

:meth:`ModelParts.stages` returns a fresh backbone's stages with their input and output shapes
(:class:`Stage`; dict states have dict shapes), and refuses a backbone without ``stages()`` or
whose stages pass a dict without ``features``, naming what is missing.
"""

from __future__ import annotations

import dataclasses
import inspect
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, NamedTuple

import keras
import numpy as np
import tensorflow as tf

from mtbench.config import ConfigError
from mtbench.data import TaskHierarchy, TaskSpec
from mtbench.model import MultiTaskNetwork, dtype_policy

Shape = tuple[int | None, ...]


class ArchitectureError(ConfigError):
    """An architecture that cannot be built with these options, backbone, head or tasks, or a
    weighting method that cannot train it; refused before training."""


class Stage(NamedTuple):
    """One stage of a backbone: its layer and the shapes it maps (batch axis ``None``)."""

    name: str
    layer: keras.layers.Layer
    input_shape: Any
    output_shape: Any


class Chain(keras.layers.Layer):
    """Layers applied in order, each with the ``training`` flag: a backbone stage made of
    layers the backbone creates. It is serialised with the backbone that creates it, not alone.
    What passes between its layers is theirs to choose: one tensor, or a dict state (see the
    module docstring), and so are the shapes it builds them on.

    Args:
        layers: The layers, input side first.

    Example:
        >>> stage = Chain([conv2, pool], name="stage2")
        >>> stage.compute_output_shape((None, 32, 32, 32))
        (None, 15, 15, 32)
    """

    def __init__(self, layers: Sequence[keras.layers.Layer], **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.parts = list(layers)

    def build(self, input_shape: Any) -> None:
        shape = input_shape
        for layer in self.parts:
            layer.build(shape)
            shape = layer.compute_output_shape(shape)
        self.built = True

    def call(self, inputs: Any, training: bool = False) -> Any:
        x = inputs
        for layer in self.parts:
            x = layer(x, training=training)
        return x

    def compute_output_shape(self, input_shape: Any) -> Any:
        shape = input_shape
        for layer in self.parts:
            shape = layer.compute_output_shape(shape)
        return shape


#: The entry of a dict state that architectures act on (see the module docstring).
FEATURES = "features"
#: The optional entry of a dict state marking the real elements of a padded set of features.
MASK = "mask"


def features_of(state: Any) -> Any:
    """The tensor architectures act on: ``state`` itself, or ``state["features"]``."""
    return state[FEATURES] if isinstance(state, Mapping) else state


def with_features(state: Any, features: Any) -> Any:
    """``state`` with its features replaced by ``features`` and its context carried over."""
    return {**state, FEATURES: features} if isinstance(state, Mapping) else features


def elements_of(state: Any) -> Any:
    """The mask of real elements of a state (``[batch, elements]``), or ``None``."""
    return state.get(MASK) if isinstance(state, Mapping) else None


def features_shape(shape: Any) -> Any:
    """The shape of the features of a state of shape ``shape``."""
    return shape[FEATURES] if isinstance(shape, Mapping) else shape


def masked_mean(x: Any, mask: Any) -> Any:
    """The mean of ``x`` ``[batch, elements, ...]`` over its real elements (``mask`` ``[batch,
    elements]``, 1 for real ones), computed in float32 and returned in ``x``'s dtype; 0 for an
    example without any."""
    values = tf.cast(x, tf.float32)
    weights = tf.cast(mask, tf.float32)
    for _ in range(len(x.shape) - 2):
        weights = weights[..., None]
    total = tf.reduce_sum(values * weights, axis=1)
    count = tf.maximum(tf.reduce_sum(weights, axis=1), 1.0)
    return tf.cast(total / count, x.dtype)


def pooled_features(state: Any) -> Any:
    """What a gate reads from a state: its features, averaged over the real elements when the
    state marks them (:data:`MASK`), so that the gate does not depend on the order of the
    elements or on the padding."""
    features, mask = features_of(state), elements_of(state)
    return features if mask is None else masked_mean(features, mask)


@dataclass(frozen=True)
class ModelParts:
    """What an architecture assembles, as configs: it builds fresh plugin instances on request.

    Args:
        backbone: The backbone plugin's config, plain (``{"name": ..., **options}``).
        head: The head plugin's config, plain.
        tasks: The tasks the model predicts, in order.
        input_shape: The shape of the preprocessed inputs with the batch axis ``None`` (a dict
            of shapes for dict inputs).
        hierarchy: The dataset's task hierarchy, for heads that declare ``hierarchy``.
        seed: The run's seed (heads and task-specific layers derive their initialisers from it
            with :func:`mtbench.model.task_seed`).
    """

    backbone: Mapping[str, Any]
    head: Mapping[str, Any]
    tasks: tuple[TaskSpec, ...]
    input_shape: Any
    hierarchy: TaskHierarchy | None = None
    seed: int | None = None

    @classmethod
    def of(
        cls,
        backbone: Any,
        head: Any,
        tasks: Sequence[TaskSpec],
        inputs: Any,
        *,
        hierarchy: TaskHierarchy | None = None,
        seed: int | None = None,
    ) -> ModelParts:
        """Parts from plugin configs (composed nodes or mappings) and a batch of preprocessed
        ``inputs`` (their shapes are kept)."""
        from mtbench import registry

        shape = tf.nest.map_structure(lambda x: (None, *tuple(x.shape)[1:]), inputs)
        return cls(
            registry.plain_config(backbone),
            registry.plain_config(head),
            tuple(TaskSpec.coerce(t) for t in tasks),
            shape,
            hierarchy,
            None if seed is None else int(seed),
        )

    @property
    def task_names(self) -> tuple[str, ...]:
        return tuple(t.name for t in self.tasks)

    def make_backbone(self) -> keras.layers.Layer:
        """A new instance of the backbone (initialised from the global random state)."""
        from mtbench import registry

        return registry.build("backbone", dict(self.backbone))

    def make_heads(self, tasks: Sequence[TaskSpec] | None = None) -> keras.layers.Layer:
        """A new head layer predicting ``tasks`` (default: every task). It gets ``seed`` and
        ``hierarchy`` if it declares them."""
        from mtbench import registry

        factory = registry.get("head", str(self.head["name"])).factory
        extra: dict[str, Any] = {"tasks": list(self.tasks if tasks is None else tasks)}
        if _accepts(factory, "seed"):
            extra["seed"] = self.seed  # heads written before `seed` existed keep working
        if _accepts(factory, "hierarchy"):
            extra["hierarchy"] = self.hierarchy
        return registry.build("head", dict(self.head), **extra)

    def make_task_heads(self, architecture: str) -> dict[str, keras.layers.Layer]:
        """One head layer per task, each reading its own task's representation.

        Raises:
            ArchitectureError: the head predicts one task from another task's layers (it
                declares ``hierarchy`` and the dataset's hierarchy links two of the tasks), which
                needs one representation for both.
        """
        from mtbench import registry

        factory = registry.get("head", str(self.head["name"])).factory
        h = self.hierarchy
        if h is not None and _accepts(factory, "hierarchy"):
            if {h.child, h.parent} <= set(self.task_names):
                raise ArchitectureError(
                    f"head={self.head['name']} predicts task '{h.parent}' from the layers of "
                    f"task '{h.child}' (the dataset's hierarchy), so both must read one "
                    f"representation, but architecture={architecture} gives each task its own. "
                    "Use a head that predicts each task on its own (e.g. head=dense or "
                    "head=mlp), or architecture=hard_sharing"
                )
        return {t.name: self.make_heads([t]) for t in self.tasks}

    def stages(self, architecture: str) -> list[Stage]:
        """The stages of a new backbone instance with their shapes (see the module docstring).

        Raises:
            ArchitectureError: the backbone has no ``stages()``, or it returns no layers.
        """
        backbone = self.make_backbone()
        name = self.backbone["name"]
        method = getattr(backbone, "stages", None)
        where = f"{type(backbone).__module__}.{type(backbone).__qualname__}"
        if not callable(method):
            raise ArchitectureError(
                f"architecture={architecture} cuts the backbone into stages, but backbone "
                f"'{name}' ({where}) has no stages() method. A backbone with stages returns them "
                "in order from stages() (see mtbench.architecture); the reference backbones "
                "seed_cnn, resnet, resnet9, wide_resnet, mlp, schnet and descriptor_mlp have "
                "them. Choose one of those, "
                "or an architecture that uses whole backbones (hard_sharing; mmoe, cgc or "
                "dselect_k with expert_stages=null)"
            )
        layers = list(method())
        if not layers or not all(isinstance(s, keras.layers.Layer) for s in layers):
            raise ArchitectureError(
                f"backbone '{name}' ({where}).stages() returned {layers!r}: it must return a "
                "non-empty list of Keras layers whose composition is the backbone"
            )
        stages, shape = [], self.input_shape
        for index, layer in enumerate(layers):
            out = _tuple_shapes(layer.compute_output_shape(shape))
            last = index == len(layers) - 1
            if isinstance(out, Mapping) and (last or FEATURES not in out):
                what = (
                    "the last stage must return the backbone's features, one tensor"
                    if last
                    else f"a stage that passes a dict must hold the features under "
                    f"'{FEATURES}' (and may add '{MASK}' and context)"
                )
                raise ArchitectureError(
                    f"stage '{layer.name}' of backbone '{name}' ({where}) returns a dict of "
                    f"{sorted(out)}: {what} (see mtbench.architecture)"
                )
            stages.append(Stage(layer.name, layer, shape, out))
            shape = out
        return stages

    def get_config(self) -> dict[str, Any]:
        h = self.hierarchy
        return {
            "backbone": dict(self.backbone),
            "head": dict(self.head),
            "tasks": [t.get_config() for t in self.tasks],
            "input_shape": _json_shapes(self.input_shape),
            "hierarchy": None
            if h is None
            else {"child": h.child, "parent": h.parent, "parent_of": [int(p) for p in h.parent_of]},
            "seed": self.seed,
        }

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> ModelParts:
        h = config.get("hierarchy")
        return cls(
            dict(config["backbone"]),
            dict(config["head"]),
            tuple(TaskSpec.coerce(t) for t in config["tasks"]),
            _tuple_shapes(config["input_shape"]),
            None
            if h is None
            else TaskHierarchy(h["child"], h["parent"], np.asarray(h["parent_of"], np.int64)),
            config.get("seed"),
        )

    @classmethod
    def coerce(cls, value: ModelParts | Mapping[str, Any]) -> ModelParts:
        return value if isinstance(value, ModelParts) else cls.from_config(value)


#: Keyword arguments of a Keras model's constructor that are not an architecture's options.
_KERAS_ARGUMENTS = ("name", "trainable", "dtype")


class ComposedNetwork(MultiTaskNetwork):
    """Base of architectures assembled from :class:`ModelParts` and typed options.

    A subclass sets :attr:`options_class` (a dataclass; its ``check()``, if any, refuses bad
    values with :class:`ArchitectureError` or :class:`~mtbench.config.ConfigError`), creates its
    layers in ``__init__`` after calling this one, and implements :meth:`features`,
    :meth:`predict_heads`, :meth:`shared_layers` and :meth:`task_layers`. It is serialised by its
    parts, options and preprocessing (``from_config`` rebuilds the layers from the plugins, under
    the saved dtype policy, before Keras loads the weights).

    Args:
        parts: What the network assembles (or its ``get_config()`` dict).
        preprocessing: See :class:`~mtbench.model.MultiTaskNetwork`.
        **options: The fields of :attr:`options_class`.
    """

    options_class: ClassVar[type | None] = None
    #: The architecture's registered name, for messages.
    architecture: ClassVar[str] = "?"

    def __init__(
        self,
        parts: ModelParts | Mapping[str, Any],
        preprocessing: keras.layers.Layer | None = None,
        **options: Any,
    ) -> None:
        keras_kwargs = {k: options.pop(k) for k in _KERAS_ARGUMENTS if k in options}
        super().__init__(preprocessing, **keras_kwargs)
        self.parts = ModelParts.coerce(parts)
        if self.options_class is None:
            if options:
                raise ArchitectureError(
                    f"architecture={self.architecture} has no options; got {sorted(options)}"
                )
            self.options = None
        else:
            self.options = self.options_class(**options)
            check = getattr(self.options, "check", None)
            if callable(check):
                check()

    # ------------------------------------------------------------------------- the contract
    def shared_layers(self) -> list[Any]:
        """The layers (or variables) that more than one task's loss reaches, in a fixed
        order."""
        raise NotImplementedError

    def task_layers(self, task: str) -> list[Any]:
        """The layers (or variables) only ``task``'s loss reaches, in a fixed order."""
        raise NotImplementedError

    @property
    def shared_variables(self) -> list[keras.Variable]:
        return _trainable(self.shared_layers())

    @property
    def task_variables(self) -> list[keras.Variable]:
        return [v for t in self.parts.task_names for v in self.variables_of_task(t)]

    def variables_of_task(self, task: str) -> list[keras.Variable]:
        """The trainable variables of ``task`` alone."""
        return _trainable(self.task_layers(task))

    def check_stage_count(self, option: str, value: int, stages: Sequence[Stage]) -> None:
        """Refuse ``value`` of ``option`` outside ``1..len(stages)``."""
        if not 1 <= value <= len(stages):
            names = ", ".join(s.name for s in stages)
            raise ArchitectureError(
                f"architecture.{option}={value} is out of range for backbone "
                f"'{self.parts.backbone['name']}', which has {len(stages)} stages ({names}): it "
                f"must be in 1..{len(stages)}"
            )

    # ----------------------------------------------------------------------- serialisation
    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        options = {} if self.options is None else dataclasses.asdict(self.options)
        config.update(
            parts=self.parts.get_config(),
            preprocessing=None
            if self.preprocessing is None
            else keras.saving.serialize_keras_object(self.preprocessing),
            **options,
        )
        return config

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> ComposedNetwork:
        config = dict(config)
        policy = keras.dtype_policies.get(config.get("dtype") or keras.config.dtype_policy())
        preprocessing = config.pop("preprocessing", None)
        if preprocessing is not None:
            preprocessing = keras.saving.deserialize_keras_object(preprocessing)
        with dtype_policy(policy.name):  # the plugins' sublayers take the global policy
            return cls(config.pop("parts"), preprocessing, **config)


class PerTaskHeads(ComposedNetwork):
    """A :class:`ComposedNetwork` whose tasks read different representations: :meth:`features`
    returns ``{task: representation}`` and each task has its own head layer (``self.heads``,
    created by :meth:`make_heads` after the layers it reads)."""

    shared_representation: ClassVar[bool] = False

    def make_heads(self) -> None:
        self.heads = self.parts.make_task_heads(self.architecture)

    def predict_heads(
        self, features: Mapping[str, Any], training: bool = False
    ) -> dict[str, tf.Tensor]:
        return self.as_float32(
            {t: self.heads[t](features[t], training=training)[t] for t in self.parts.task_names}
        )


# ------------------------------------------------------------------------- checks and sizes
def check_config(config: Any) -> None:
    """Refuse bad options of an architecture config before any data is read (its options
    dataclass's ``check()``); unknown names and options are refused by the registry."""
    from mtbench import registry

    options = registry.plain_config(config)
    name = options.pop(registry.NAME_FIELD)
    plugin = registry.get("architecture", str(name))
    allowed = {f.name for f in dataclasses.fields(plugin.config)}
    unknown = sorted(set(options) - allowed)
    if unknown:
        raise registry.PluginError(
            f"architecture '{name}' got unknown options {unknown}; its options are "
            f"{sorted(allowed)}"
        )
    check = getattr(plugin.config(**options), "check", None)
    if callable(check):
        check()


def check_weighting(
    model: MultiTaskNetwork | type[MultiTaskNetwork],
    weighting: Any,
    *,
    architecture: str,
    weighting_name: str,
) -> None:
    """Refuse a weighting method that cannot train ``model`` (a network, or its class: what it
    reads is the class's ``shared_representation``, so the protocol checks an architecture class
    before reading any data): a gradient method of the features (``gradient_of = "features"``)
    needs the one representation every head reads.

    Raises:
        ArchitectureError: the method combines feature gradients and the tasks of ``model``
            read different representations.
    """
    if getattr(weighting, "level", None) != "gradient":
        return
    if getattr(weighting, "gradient_of", "shared_parameters") != "features":
        return
    if model.shared_representation:
        return
    raise ArchitectureError(
        f"weighting={weighting_name} combines the per-task gradients of the one representation "
        "every head reads (gradient_of='features'), but with "
        f"architecture={architecture} each task reads its own representation, so there is no "
        "such representation. Use a weighting that combines the gradients of the shared "
        "parameters (gradient_of='shared_parameters': e.g. pcgrad, cagrad, mgda with its "
        "default options, graddrop with gradient_of=shared_parameters), or "
        "architecture=hard_sharing"
    )


def parameter_counts(model: MultiTaskNetwork, example: Any) -> dict[str, Any]:
    """The model's trainable parameters: shared, task-specific, and per task.

    ``per_task[t]`` counts the task variables that only task ``t``'s loss reaches, found by
    differentiating each task's outputs on ``example`` (one small batch) in the replica context
    of the current ``tf.distribute`` strategy (where its variables can be differentiated);
    ``task_specific_unattributed`` counts task variables that several tasks' losses reach (a
    head that predicts one task from another's classifier). Counts are numbers of scalars.
    """
    variables = list(model.trainable_variables)
    tasks: list[str] = []

    def reached() -> tf.Tensor:  # [task, variable]: whether the task's outputs reach it
        with tf.GradientTape(persistent=True) as tape:
            outputs = model(example, training=False)
            sums = [tf.reduce_sum(tf.cast(o, tf.float32)) for o in outputs.values()]
        tasks[:] = list(outputs)
        flags = [[g is not None for g in tape.gradient(s, variables)] for s in sums]
        return tf.constant(flags, tf.bool, shape=[len(sums), len(variables)])

    strategy = tf.distribute.get_strategy()
    flags = strategy.experimental_local_results(strategy.run(reached))[0].numpy()
    sizes = np.array([int(np.prod(v.shape)) for v in variables], np.int64)
    task_ids = {id(w) for w in model.task_variables}
    owned = np.array([id(v) in task_ids for v in variables])
    alone = flags & (flags.sum(axis=0, keepdims=True) == 1) & owned
    per_task = {t: int(sizes[alone[i]].sum()) for i, t in enumerate(tasks)}
    shared = sum(int(np.prod(v.shape)) for v in model.shared_variables)
    task_specific = int(sizes[owned].sum())
    return {
        "trainable": int(sizes.sum()),
        "shared": shared,
        "task_specific": task_specific,
        "per_task": per_task,
        "task_specific_unattributed": task_specific - sum(per_task.values()),
    }


# -------------------------------------------------------------------------------- internals
def _trainable(items: Sequence[Any]) -> list[keras.Variable]:
    found, seen = [], set()
    for item in items:
        variables = item.trainable_variables if isinstance(item, keras.layers.Layer) else [item]
        for v in variables:
            if v.trainable and id(v) not in seen:
                seen.add(id(v))
                found.append(v)
    return found


def _accepts(factory: Any, argument: str) -> bool:
    """Whether ``factory`` declares the parameter ``argument`` (``**kwargs`` does not count: a
    Keras layer's refuses keywords it does not know)."""
    try:
        return argument in inspect.signature(factory).parameters
    except (TypeError, ValueError):
        return False


def _is_shape(value: Any) -> bool:
    return isinstance(value, list | tuple) and all(
        d is None or isinstance(d, int | np.integer) for d in value
    )


def _tuple_shapes(value: Any) -> Any:
    """Shapes (lists from JSON, or tuples) as tuples of ints and ``None``, in any structure."""
    if _is_shape(value):
        return tuple(None if d is None else int(d) for d in value)
    if isinstance(value, Mapping):
        return {k: _tuple_shapes(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return type(value)(_tuple_shapes(v) for v in value)
    return value


def _json_shapes(value: Any) -> Any:
    if _is_shape(value):
        return [None if d is None else int(d) for d in value]
    if isinstance(value, Mapping):
        return {k: _json_shapes(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_shapes(v) for v in value]
    return value
