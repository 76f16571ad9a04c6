"""The plugin registry: one flat table keyed by (kind, name).

A plugin is a factory (usually a class) registered under a kind and a name, together with a
dataclass that types its options. A package declares its plugins in its entry points, so that
finding them imports nothing and a plugin's module is imported only when that plugin is used::

    [project.entry-points."mtbench.plugins"]
    "weighting.half" = "my_package.half:Half"            # the factory, imported when built
    [project.entry-points."mtbench.configs"]
    "weighting.half" = "my_package.options:HalfConfig"   # its options: a module without TensorFlow

A plugin without options needs no ``mtbench.configs`` entry. An entry point of
``mtbench.plugins`` whose name has no ``<kind>.`` prefix is the older form: it names a module
whose import registers plugins with :func:`register`; such modules are imported at start-up, by
every command (``--help`` included), so their import time is paid every time.

:func:`store_schemas` stores the options of every plugin of a kind that the command line selects
(:data:`CONFIG_KINDS`) in Hydra's ConfigStore: the command line calls it before Hydra composes, so
a mistyped key or a wrongly typed value fails at compose time. Plugins of kind ``task`` are chosen
by datasets, not on the command line, and have no config group.

Two packages that register the same (kind, name) make that one name unusable (selecting it raises
:class:`DuplicatePluginError`, which names both); every other plugin keeps working.
"""

from __future__ import annotations

import dataclasses
import fnmatch
import importlib
import logging
import sys
import traceback
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from functools import cached_property
from importlib import metadata
from pathlib import Path
from typing import Any, TypeVar

log = logging.getLogger(__name__)

KINDS: tuple[str, ...] = ("dataset", "task", "backbone", "head", "architecture", "weighting")
#: The kinds chosen on the command line (``weighting=static``): each is a Hydra config group.
CONFIG_KINDS: tuple[str, ...] = ("dataset", "backbone", "head", "architecture", "weighting")
ENTRY_POINT_GROUP = "mtbench.plugins"
CONFIG_ENTRY_POINT_GROUP = "mtbench.configs"
NAME_FIELD = "name"

F = TypeVar("F", bound=Callable[..., Any])


class PluginError(Exception):
    """Base class of registry errors."""


class UnknownPluginError(PluginError, LookupError):
    """No plugin is registered under the requested (kind, name)."""


class DuplicatePluginError(PluginError):
    """Two packages register the same (kind, name); that name is unusable until one goes."""


@dataclass(frozen=True)
class Plugin:
    """A registered plugin.

    Args:
        kind: One of :data:`KINDS`.
        name: The name users type (``weighting=<name>``).
        factory_ref: The factory, or where it lives as ``"module:attr"`` (imported on first use
            of :attr:`factory`).
        config_ref: The options dataclass, where it lives as ``"module:attr"``, or ``None`` (no
            options).
        source: Where the plugin came from, for error messages.
        distribution: The installed distribution that declares it (``None``: registered at run
            time).
    """

    kind: str
    name: str
    factory_ref: Callable[..., Any] | str
    config_ref: type | str | None
    source: str
    distribution: str | None = None

    @cached_property
    def factory(self) -> Callable[..., Any]:
        """Called with the config's fields as keyword arguments (plus kind-specific extras)."""
        if not isinstance(self.factory_ref, str):
            return self.factory_ref
        factory = self._resolve(self.factory_ref, "factory")
        if not callable(factory):
            raise PluginError(
                f"{self.kind} '{self.name}': its factory {self.factory_ref} ({self.source}) is a "
                f"{type(factory).__name__}, not a class or function"
            )
        return factory

    @cached_property
    def config(self) -> type:
        """The dataclass that types the plugin's options (without the ``name`` field)."""
        if self.config_ref is None:
            return _empty_config(self.kind, self.name)
        if isinstance(self.config_ref, str):
            config = self._resolve(self.config_ref, "options")
            _check_config(self.kind, self.name, config, f" ({self.config_ref}, {self.source})")
            return config
        return self.config_ref

    @cached_property
    def schema(self) -> type:
        """:attr:`config` extended with a ``name`` field; this is what Hydra stores."""
        return _schema_for(self.kind, self.name, self.config)

    def _resolve(self, reference: str, what: str) -> Any:
        module_name, _, attribute = reference.partition(":")
        try:
            value: Any = importlib.import_module(module_name.strip())
            for part in attribute.strip().split("."):
                value = getattr(value, part)
        except Exception as exc:
            raise PluginError(
                f"{self.kind} '{self.name}': its {what} {reference} ({self.source}) could not be "
                f"loaded: {''.join(traceback.format_exception_only(exc)).strip()}"
            ) from exc
        return value


@dataclass(frozen=True)
class LoadFailure:
    """An entry point whose module could not be imported, or that mtbench cannot read."""

    entry_point: str
    module: str
    distribution: str
    error: str

    def describe(self) -> str:
        return (
            f"plugin module '{self.module}' (entry point '{self.entry_point}' of distribution "
            f"'{self.distribution}') failed to load: {self.error}"
        )


_plugins: dict[tuple[str, str], Plugin] = {}
#: (kind, name) registered by more than one source: the sources, in the order found.
_clashes: dict[tuple[str, str], list[str]] = {}
_failures: list[LoadFailure] = []
_entry_points_loaded = False
#: (entry point, distribution) of the module of the older form being imported, if any.
_current_entry_point: tuple[str, str] | None = None


def register(kind: str, name: str, *, config: type | None = None) -> Callable[[F], F]:
    """Register a plugin; use as a class or function decorator.

    Packages should rather declare plugins as entry points (see the module docstring), which
    imports their modules only when used; this decorator serves modules named by the older form
    of entry point, plugins registered at run time, and mtbench's own task kinds.

    Args:
        kind: One of ``dataset``, ``task``, ``backbone``, ``head``, ``architecture``,
            ``weighting``.
        name: The name users select it by. Letters, digits, ``_`` and ``-``.
        config: A dataclass typing the plugin's options; its fields are passed to the factory as
            keyword arguments. ``None`` means the plugin takes no options.

    Example:
        >>> @register("weighting", "half", config=HalfConfig)
        ... class Half(LossWeighting): ...
    """
    _check_kind(kind)
    _check_name(name)
    if config is not None:
        _check_config(kind, name, config)

    def decorator(factory: F) -> F:
        source = f"{factory.__module__}.{getattr(factory, '__qualname__', repr(factory))}"
        distribution = None
        if _current_entry_point:
            source += f" ({_current_entry_point[0]} of distribution '{_current_entry_point[1]}')"
            distribution = _current_entry_point[1]
        _add(Plugin(kind, name, factory, config, source, distribution))
        return factory

    return decorator


def get(kind: str, name: str) -> Plugin:
    """Return the plugin registered as (kind, name), loading entry points first.

    Raises:
        UnknownPluginError: nothing is registered under that name.
        DuplicatePluginError: two packages register it.
    """
    _check_kind(kind)
    load_entry_points()
    if (kind, name) in _clashes:
        raise DuplicatePluginError(_clash_message(kind, name))
    try:
        return _plugins[(kind, name)]
    except KeyError:
        raise UnknownPluginError(_unknown_message(kind, name)) from None


def names(kind: str, pattern: str = "*") -> list[str]:
    """Sorted names of the registered plugins of ``kind`` matching a shell-style ``pattern``
    (names that two packages register included: selecting one raises)."""
    _check_kind(kind)
    load_entry_points()
    return sorted(n for k, n in _plugins if k == kind and fnmatch.fnmatchcase(n, pattern))


def build(kind: str, config: Any, **extra: Any) -> Any:
    """Build the plugin that ``config`` selects (importing its module if not yet imported).

    Args:
        kind: The plugin kind.
        config: A composed config node (``cfg.weighting``), a mapping, or a dataclass instance,
            holding ``name`` and the plugin's options.
        **extra: Kind-specific arguments supplied by mtbench (``tasks`` for heads; ``parts`` and
            ``preprocessing`` for architectures, see :mod:`mtbench.architecture`).
    """
    options = _as_dict(config)
    name = options.pop(NAME_FIELD, None)
    if name is None:
        raise PluginError(f"the {kind} config has no '{NAME_FIELD}' field: {options}")
    plugin = get(kind, name)
    allowed = {f.name for f in dataclasses.fields(plugin.config)}
    unknown = sorted(set(options) - allowed)
    if unknown:
        raise PluginError(
            f"{kind} '{name}' got unknown options {unknown}; its options are {sorted(allowed)}"
        )
    return plugin.factory(**options, **extra)


def plain_config(config: Any) -> dict[str, Any]:
    """A plugin config (composed node, mapping or dataclass instance, with its ``name``) as plain
    JSON-able values: Enum members become their values, nested containers plain lists and dicts.

    Example:
        >>> plain_config(cfg.backbone)
        {'name': 'resnet9', 'width': 32, 'global_pool': 'max'}
    """
    return _plain(_as_dict(config))


def load_failures() -> list[LoadFailure]:
    """Entry points that failed to import or to be read (their plugins are unavailable)."""
    load_entry_points()
    return list(_failures)


def schema_name(kind: str, name: str) -> str:
    """The ConfigStore name of a plugin's schema; a YAML option file extends it with
    ``defaults: [/<kind>_<name>_schema@_here_, _self_]``.

    Schemas are stored at the root, where Hydra's ``--help`` does not list them, and not in a
    group (that group would be listed as if users could choose from it).
    """
    return f"{kind}_{name}_schema"


def store_schemas(config_dir: Path | None = None) -> None:
    """Store the schema of every plugin of :data:`CONFIG_KINDS` in Hydra's ConfigStore.

    Imports every plugin's options module (which should not import TensorFlow), never its
    factory's module. Each schema is stored as :func:`schema_name`, and also as the group
    option ``<kind>/<name>`` unless ``config_dir`` holds ``<kind>/<name>.yaml`` (that file
    extends the schema instead: a file and a schema under one name is Hydra's deprecated automatic
    schema matching). A name that two packages register is stored untyped, so that composing
    succeeds and the run is refused, naming both, before it starts. A plugin whose options cannot
    be loaded, or that Hydra cannot type, is logged, recorded in :func:`load_failures`, and left
    out; the other plugins are stored.
    """
    from hydra.core.config_store import ConfigStore

    load_entry_points()
    store = ConfigStore.instance()
    for (kind, name), plugin in sorted(_plugins.items()):
        if kind not in CONFIG_KINDS:
            continue
        try:
            node = {NAME_FIELD: name} if (kind, name) in _clashes else plugin.schema
            store.store(name=schema_name(kind, name), node=node, provider="mtbench.plugins")
            if config_dir is None or not (config_dir / kind / f"{name}.yaml").is_file():
                store.store(group=kind, name=name, node=node, provider="mtbench.plugins")
        except PluginError as exc:
            _fail(f"{kind}.{name}", str(plugin.config_ref), plugin.distribution, str(exc))
        except Exception as exc:  # Hydra cannot type the options: only this plugin is lost
            message = "".join(traceback.format_exception_only(exc)).strip()
            _fail(
                f"{kind}.{name}",
                str(plugin.config_ref or plugin.factory_ref),
                plugin.distribution,
                f"Hydra cannot store its options {plugin.config.__name__}: {message} "
                "(OmegaConf types fields as int, float, bool, str, bytes, pathlib.Path, an Enum, "
                "Optional, lists, dicts and dataclasses of these; use an Enum for a choice)",
            )


def load_entry_points(*, reload: bool = False) -> None:
    """Read the ``mtbench.plugins`` and ``mtbench.configs`` entry points (once).

    ``<kind>.<name> = module:attr`` entries are registered without importing anything; entries
    of the older form (a module) are imported here. A module that fails to import, or an entry
    mtbench cannot read, is recorded and logged by name; the others still load. Two sources of
    one (kind, name) are recorded and logged (see :class:`DuplicatePluginError`).
    """
    global _entry_points_loaded
    if _entry_points_loaded and not reload:
        return
    _entry_points_loaded = True
    found = metadata.entry_points()
    configs: dict[tuple[str, str], metadata.EntryPoint] = {}
    for entry_point in found.select(group=CONFIG_ENTRY_POINT_GROUP):
        configs.setdefault((_distribution(entry_point), entry_point.name), entry_point)
    modules: list[metadata.EntryPoint] = []
    seen: set[tuple[str, str]] = set()  # the same distribution found twice on sys.path
    for entry_point in sorted(
        found.select(group=ENTRY_POINT_GROUP), key=lambda e: (e.name, e.value)
    ):
        if (entry_point.name, entry_point.value) in seen:
            continue
        seen.add((entry_point.name, entry_point.value))
        if "." in entry_point.name:
            config = configs.pop((_distribution(entry_point), entry_point.name), None)
            _declare(entry_point, config)
        else:
            modules.append(entry_point)
    for (distribution, key), entry_point in sorted(configs.items()):
        _fail(
            key,
            entry_point.value,
            distribution,
            f"no '{ENTRY_POINT_GROUP}' entry point '{key}' in the same distribution declares "
            "the plugin these options are for",
        )
    imported: set[str] = set()
    for entry_point in sorted(modules, key=lambda e: (e.value, e.name)):
        if entry_point.value not in imported:
            imported.add(entry_point.value)
            _import_module(entry_point)


@contextmanager
def isolated() -> Iterator[None]:
    """Run a block with a private copy of the registry state and of Hydra's ConfigStore (for
    tests and tools): what the block registers or stores is gone after it.

    Entry points are loaded first: a module imported once is not imported again.
    """
    from hydra.core.config_store import ConfigStore
    from hydra.core.plugins import Plugins

    global _plugins, _clashes, _failures, _entry_points_loaded
    load_entry_points()
    saved = dict(_plugins), {k: list(v) for k, v in _clashes.items()}, list(_failures)
    # Hydra stores its own configs (hydra/sweeper/basic, ...) once, when its plugins are first
    # loaded: load them now, so that restoring the copy below does not drop them
    Plugins.instance()
    store = ConfigStore.instance()
    saved_repo = _copy_tree(store.repo)
    try:
        yield
    finally:
        _plugins, _clashes, _failures = dict(saved[0]), dict(saved[1]), list(saved[2])
        _entry_points_loaded = True
        store.repo = saved_repo


def __getattr__(attribute: str) -> type:
    """The schema classes of plugins, by the qualified name :func:`_schema_for` gives them, so
    that configs pickled for a process launcher's workers unpickle there."""
    if attribute.startswith(_SCHEMA_PREFIX):
        kind, _, name = attribute.removeprefix(_SCHEMA_PREFIX).partition("_")
        if kind in KINDS:
            try:
                return get(kind, name).schema
            except PluginError as exc:
                raise AttributeError(f"{attribute}: {exc}") from exc
    raise AttributeError(f"module {__name__!r} has no attribute {attribute!r}")


# ---------------------------------------------------------------------------------- internals
_SCHEMA_PREFIX = "_schema_"


def _copy_tree(tree: dict[str, Any]) -> dict[str, Any]:
    """A copy of the ConfigStore's nested dicts (the stored nodes are shared: never changed)."""
    return {k: _copy_tree(v) if isinstance(v, dict) else v for k, v in tree.items()}


def _distribution(entry_point: metadata.EntryPoint) -> str:
    return entry_point.dist.name if entry_point.dist else "unknown"


def _declare(entry_point: metadata.EntryPoint, config: metadata.EntryPoint | None) -> None:
    """Register a ``<kind>.<name> = module:attr`` entry point without importing it."""
    distribution = _distribution(entry_point)
    source = f"entry point '{entry_point.name}' of distribution '{distribution}'"
    kind, _, name = entry_point.name.partition(".")
    try:
        _check_kind(kind)
        _check_name(name)
        if ":" not in entry_point.value:
            raise PluginError(
                f"'{entry_point.value}' names a module; name the factory as 'module:attr' "
                f"(e.g. '{entry_point.value}:MyClass')"
            )
        if config is not None and ":" not in config.value:
            raise PluginError(
                f"its options '{config.value}' ('{CONFIG_ENTRY_POINT_GROUP}') name a module; "
                "name the dataclass as 'module:attr'"
            )
    except PluginError as exc:
        _fail(entry_point.name, entry_point.value, distribution, str(exc))
        return
    config_ref = config.value if config else None
    _add(Plugin(kind, name, entry_point.value, config_ref, source, distribution))


def _import_module(entry_point: metadata.EntryPoint) -> None:
    """Import a module named by an entry point of the older form (its import registers)."""
    global _current_entry_point
    distribution = _distribution(entry_point)
    _current_entry_point = f"entry point '{entry_point.name}'", distribution
    global _plugins, _clashes
    before = dict(_plugins), {k: list(v) for k, v in _clashes.items()}
    try:
        entry_point.load()
    except Exception as exc:  # a broken plugin must not hide the others
        _plugins, _clashes = before  # nothing half-registered from a broken module
        failure = LoadFailure(
            entry_point.name,
            entry_point.value,
            distribution,
            "".join(traceback.format_exception_only(exc)).strip(),
        )
        _failures.append(failure)
        log.warning("mtbench: %s; its plugins are unavailable", failure.describe())
    finally:
        _current_entry_point = None


def _add(plugin: Plugin) -> None:
    key = (plugin.kind, plugin.name)
    existing = _plugins.get(key)
    if existing is None:
        _plugins[key] = plugin
        return
    if _same_plugin(existing, plugin):
        return  # a module imported again, or a factory registered both ways
    sources = _clashes.setdefault(key, [existing.source])
    if plugin.source not in sources:
        sources.append(plugin.source)
    if len(sources) == 2:  # logged once, when the name becomes ambiguous
        log.warning("mtbench: %s", _clash_message(*key))


def _same_plugin(existing: Plugin, new: Plugin) -> bool:
    if existing.source == new.source:
        return True
    references = [
        p.factory_ref if isinstance(p.factory_ref, str) else _reference(p.factory_ref)
        for p in (existing, new)
    ]
    return references[0].replace(" ", "") == references[1].replace(" ", "")


def _reference(factory: Any) -> str:
    return f"{factory.__module__}:{getattr(factory, '__qualname__', '')}"


def _fail(entry_point: str, module: str, distribution: str | None, error: str) -> None:
    failure = LoadFailure(entry_point, module, distribution or "unknown", error)
    _failures.append(failure)
    log.warning("mtbench: %s; the plugin is unavailable", failure.describe())


def _clash_message(kind: str, name: str) -> str:
    sources = " and by ".join(_clashes[(kind, name)])
    return (
        f"{kind} '{name}' is registered more than once: by {sources}. Uninstall one of these "
        f"packages, or rename the plugin in one of them; other {kind} plugins are unaffected."
    )


def _check_kind(kind: str) -> None:
    if kind not in KINDS:
        raise PluginError(f"unknown plugin kind {kind!r}; the kinds are {', '.join(KINDS)}")


def _check_name(name: str) -> None:
    if not name or not all(c.isalnum() or c in "_-" for c in name):
        raise PluginError(f"invalid plugin name {name!r}: use letters, digits, '_' and '-'")


def _check_config(kind: str, name: str, config: Any, where: str = "") -> None:
    if not dataclasses.is_dataclass(config) or not isinstance(config, type):
        raise PluginError(
            f"{kind} '{name}': config must be a dataclass type, got {config!r}{where}"
        )
    if any(f.name == NAME_FIELD for f in dataclasses.fields(config)):
        raise PluginError(
            f"{kind} '{name}': the config field '{NAME_FIELD}'{where} is reserved by mtbench; "
            "rename it"
        )


def _unknown_message(kind: str, name: str) -> str:
    available = ", ".join(names(kind)) or "none"
    message = f"no {kind} plugin named '{name}'. Available {kind} plugins: {available}."
    if _failures:
        message += " Some plugin modules failed to import: " + "; ".join(
            f.describe() for f in _failures
        )
    return message


def _empty_config(kind: str, name: str) -> type:
    return dataclasses.make_dataclass(f"{_camel(name)}{kind.title()}Config", [])


def _schema_for(kind: str, name: str, config: type) -> type:
    """``config`` plus a ``name`` field defaulting to the plugin's name.

    Messages show the config's own name; the class is reachable as an attribute of this module
    (:func:`__getattr__`), so that process launchers can pickle configs.
    """
    schema = dataclasses.make_dataclass(
        config.__name__,
        [(NAME_FIELD, str, dataclasses.field(default=name))],
        bases=(config,),
    )
    schema.__doc__ = config.__doc__
    schema.__module__ = __name__
    schema.__qualname__ = f"{_SCHEMA_PREFIX}{kind}_{name}"
    return schema


def _as_dict(config: Any) -> dict[str, Any]:
    if dataclasses.is_dataclass(config) and not isinstance(config, type):
        return {f.name: getattr(config, f.name) for f in dataclasses.fields(config)}
    if "omegaconf" in sys.modules:  # a composed config can only come from omegaconf
        from omegaconf import DictConfig, OmegaConf

        if isinstance(config, DictConfig):
            obj = OmegaConf.to_object(config)  # typed: nested dataclasses, enums, resolved values
            return _as_dict(obj)
    if isinstance(config, Mapping):
        return dict(config)
    raise PluginError(f"cannot read a plugin config from {type(config).__name__}")


def _plain(value: Any) -> Any:
    from enum import Enum

    if isinstance(value, Enum):
        return value.value
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return _plain(_as_dict(value))
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


def _camel(name: str) -> str:
    return "".join(part.title() for part in name.replace("-", "_").split("_"))
