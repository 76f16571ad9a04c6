"""The plugin registry: one flat table keyed by (kind, name).

A plugin is a factory (usually a class) registered under a kind and a name, together with a
dataclass that types its configuration. Registering a plugin also stores that dataclass in Hydra's
ConfigStore as the option ``<kind>/<name>``, so ``weighting=static`` on the command line selects it
and a mistyped key or a wrongly typed value fails when Hydra composes the config. Where mtbench's
own ``conf/<kind>/<name>.yaml`` exists (the reference weighting methods), the dataclass is stored
as ``schema/<kind>/<name>`` instead and that file extends it.

Third-party packages register through the entry-point group ``mtbench.plugins``: each entry point
names a module whose import registers its plugins with :func:`register`. Entry points are imported
lazily, the first time the registry is read, so importing :mod:`mtbench` stays cheap.
"""

from __future__ import annotations

import dataclasses
import fnmatch
import logging
import sys
import traceback
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from importlib import metadata
from typing import Any, TypeVar

log = logging.getLogger(__name__)

KINDS: tuple[str, ...] = ("dataset", "backbone", "head", "weighting")
ENTRY_POINT_GROUP = "mtbench.plugins"
NAME_FIELD = "name"

F = TypeVar("F", bound=Callable[..., Any])


class PluginError(Exception):
    """Base class of registry errors."""


class UnknownPluginError(PluginError, LookupError):
    """No plugin is registered under the requested (kind, name)."""


class DuplicatePluginError(PluginError):
    """Two plugins were registered under the same (kind, name)."""


@dataclass(frozen=True)
class Plugin:
    """A registered plugin.

    Args:
        kind: One of :data:`KINDS`.
        name: The name users type (``weighting=<name>``).
        factory: Called with the config's fields as keyword arguments (plus kind-specific extras).
        config: The dataclass that types the plugin's configuration (without the ``name`` field).
        schema: ``config`` extended with a ``name`` field; this is what Hydra stores.
        source: Where the plugin came from, for error messages.
    """

    kind: str
    name: str
    factory: Callable[..., Any]
    config: type
    schema: type
    source: str


@dataclass(frozen=True)
class LoadFailure:
    """An entry point whose module could not be imported."""

    entry_point: str
    module: str
    distribution: str
    error: str

    def describe(self) -> str:
        return (
            f"plugin module '{self.module}' (entry point '{self.entry_point}' of distribution "
            f"'{self.distribution}') failed to import: {self.error}"
        )


_plugins: dict[tuple[str, str], Plugin] = {}
_failures: list[LoadFailure] = []
_entry_points_loaded = False
_current_entry_point: str | None = None


def register(kind: str, name: str, *, config: type | None = None) -> Callable[[F], F]:
    """Register a plugin; use as a class or function decorator.

    Args:
        kind: One of ``dataset``, ``backbone``, ``head``, ``weighting``.
        name: The name users select it by. Letters, digits, ``_`` and ``-``.
        config: A dataclass typing the plugin's options; its fields are passed to the factory as
            keyword arguments. ``None`` means the plugin takes no options.

    Example:
        >>> @register("weighting", "half", config=HalfConfig)
        ... class Half(LossWeighting): ...
    """
    _check_kind(kind)
    caller = sys._getframe(1).f_globals.get("__name__")  # the module that registers
    if not name or not all(c.isalnum() or c in "_-" for c in name):
        raise PluginError(f"invalid plugin name {name!r}: use letters, digits, '_' and '-'")
    config = config if config is not None else _empty_config(kind, name)
    if not dataclasses.is_dataclass(config) or not isinstance(config, type):
        raise PluginError(f"{kind} '{name}': config must be a dataclass type, got {config!r}")
    if any(f.name == NAME_FIELD for f in dataclasses.fields(config)):
        raise PluginError(
            f"{kind} '{name}': the config field '{NAME_FIELD}' is reserved by mtbench; rename it"
        )

    def decorator(factory: F) -> F:
        source = f"{factory.__module__}.{getattr(factory, '__qualname__', repr(factory))}"
        if _current_entry_point:
            source += f" ({_current_entry_point})"
        existing = _plugins.get((kind, name))
        if existing is not None and existing.source != source:
            raise DuplicatePluginError(
                f"{kind} '{name}' is registered twice: by {existing.source} and by {source}. "
                "Uninstall one of the two packages or rename one plugin."
            )
        schema = _schema_for(kind, name, config, home=caller or factory.__module__)
        _store_schema(kind, name, schema)
        _plugins[(kind, name)] = Plugin(kind, name, factory, config, schema, source)
        return factory

    return decorator


def get(kind: str, name: str) -> Plugin:
    """Return the plugin registered as (kind, name), loading entry points first."""
    _check_kind(kind)
    load_entry_points()
    try:
        return _plugins[(kind, name)]
    except KeyError:
        raise UnknownPluginError(_unknown_message(kind, name)) from None


def names(kind: str, pattern: str = "*") -> list[str]:
    """Sorted names of the registered plugins of ``kind`` matching a shell-style ``pattern``."""
    _check_kind(kind)
    load_entry_points()
    return sorted(n for k, n in _plugins if k == kind and fnmatch.fnmatchcase(n, pattern))


def build(kind: str, config: Any, **extra: Any) -> Any:
    """Build the plugin that ``config`` selects.

    Args:
        kind: The plugin kind.
        config: A composed config node (``cfg.weighting``), a mapping, or a dataclass instance,
            holding ``name`` and the plugin's options.
        **extra: Kind-specific arguments supplied by mtbench (e.g. ``tasks`` for heads).
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


def load_failures() -> list[LoadFailure]:
    """Entry points that failed to import (their plugins are unavailable)."""
    load_entry_points()
    return list(_failures)


def load_entry_points(*, reload: bool = False) -> None:
    """Import every module named in the ``mtbench.plugins`` entry-point group (once).

    A module that fails to import is recorded and logged by name; the others still load. Two
    plugins with the same (kind, name) raise :class:`DuplicatePluginError`.
    """
    global _entry_points_loaded, _current_entry_point
    if _entry_points_loaded and not reload:
        return
    _entry_points_loaded = True
    seen_modules: set[str] = set()
    for entry_point in sorted(
        metadata.entry_points(group=ENTRY_POINT_GROUP), key=lambda e: (e.value, e.name)
    ):
        if entry_point.value in seen_modules:
            continue  # the same distribution found twice on sys.path
        seen_modules.add(entry_point.value)
        distribution = entry_point.dist.name if entry_point.dist else "unknown"
        label = f"entry point '{entry_point.name}' of distribution '{distribution}'"
        _current_entry_point = label
        before = set(_plugins)
        try:
            entry_point.load()
        except DuplicatePluginError:
            raise
        except Exception as exc:  # a broken plugin must not hide the others
            for key in set(_plugins) - before:  # nothing half-registered from a broken module
                del _plugins[key]
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


@contextmanager
def isolated() -> Iterator[None]:
    """Run a block with a private copy of the registry state (for tests and tools).

    Entry points are loaded first: a module imported once is not imported again.
    """
    global _plugins, _failures, _entry_points_loaded
    load_entry_points()
    saved = dict(_plugins), list(_failures), _entry_points_loaded
    try:
        yield
    finally:
        _plugins, _failures, _entry_points_loaded = dict(saved[0]), list(saved[1]), saved[2]


def _check_kind(kind: str) -> None:
    if kind not in KINDS:
        raise PluginError(f"unknown plugin kind {kind!r}; the kinds are {', '.join(KINDS)}")


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


def _schema_for(kind: str, name: str, config: type, home: str) -> type:
    """``config`` plus a ``name`` field defaulting to the plugin's name.

    Messages show the config's own name; the class lives, under a name of its own, in ``home``
    (the module that registers the plugin), so that process launchers can pickle configs: a
    worker that unpickles one imports ``home``, which registers the plugin again.
    """
    schema = dataclasses.make_dataclass(
        config.__name__,
        [(NAME_FIELD, str, dataclasses.field(default=name))],
        bases=(config,),
    )
    schema.__doc__ = config.__doc__
    schema.__module__ = home
    schema.__qualname__ = f"_mtbench_schema_{kind}_{name.replace('-', '_')}"
    module = sys.modules.get(home)
    if module is not None:
        setattr(module, schema.__qualname__, schema)
    return schema


#: The config group that holds a plugin's schema when mtbench's ``conf/<kind>/<name>.yaml``
#: exists: that file extends it (``defaults: [/schema/<kind>/<name>@_here_, _self_]``), since a
#: file and a schema stored under one name is Hydra's deprecated automatic schema matching.
SCHEMA_GROUP = "schema"


def _store_schema(kind: str, name: str, schema: type) -> None:
    from hydra.core.config_store import ConfigStore

    group = f"{SCHEMA_GROUP}/{kind}" if _has_config_file(kind, name) else kind
    ConfigStore.instance().store(group=group, name=name, node=schema, provider="mtbench.plugins")


def _has_config_file(kind: str, name: str) -> bool:
    from mtbench.cli import config_dir

    try:
        return (config_dir() / kind / f"{name}.yaml").is_file()
    except FileNotFoundError:
        return False


def _as_dict(config: Any) -> dict[str, Any]:
    if dataclasses.is_dataclass(config) and not isinstance(config, type):
        return {f.name: getattr(config, f.name) for f in dataclasses.fields(config)}
    try:
        from omegaconf import DictConfig, OmegaConf

        if isinstance(config, DictConfig):
            obj = OmegaConf.to_object(config)  # typed: nested dataclasses, enums, resolved values
            return _as_dict(obj)
    except ImportError:  # pragma: no cover - omegaconf is a dependency
        pass
    if isinstance(config, Mapping):
        return dict(config)
    raise PluginError(f"cannot read a plugin config from {type(config).__name__}")


def _camel(name: str) -> str:
    return "".join(part.title() for part in name.replace("-", "_").split("_"))
