"""The plugin manager: pluggy hooks, loaded from the ``autolab`` entry-point group.

Built-in plugins register through the same entry points as third-party ones. A plugin that fails
to import, or whose registration hook raises, produces one warning naming its distribution and
the error; everything else keeps working. Set ``AUTOLAB_STRICT_PLUGINS=1`` to make such a
failure fatal (useful in a plugin's own CI).
"""

from __future__ import annotations

import importlib.metadata
import os
import warnings
from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any

import attrs
import pluggy

from autolab_core import hookspecs
from autolab_core.errors import PluginError
from autolab_core.interfaces import PLUGIN_KINDS, MetricStore, Plugin, PluginContext

if TYPE_CHECKING:
    from autolab_core.lab import Lab

ENTRY_POINT_GROUP = "autolab"

_REGISTER_HOOKS = {
    "backend": "autolab_register_backends",
    "llm": "autolab_register_llms",
    "paper_source": "autolab_register_paper_sources",
    "metric_store": "autolab_register_metric_stores",
}


class PluginWarning(UserWarning):
    """A plugin could not be loaded or registered; the rest of autolab keeps working."""


@attrs.frozen
class PluginInfo:
    """One registered plugin class and where it came from."""

    name: str
    kind: str
    cls: type[Plugin]
    distribution: str
    version: str

    def available(self) -> str | None:
        try:
            return self.cls.available()
        except Exception as exc:  # a plugin must not crash `autolab plugins`
            return f"available() raised {type(exc).__name__}: {exc}"


def strict() -> bool:
    return os.environ.get("AUTOLAB_STRICT_PLUGINS", "") not in ("", "0", "false", "no")


class PluginManager:
    """Loads plugins and answers "which class implements backend X?"."""

    def __init__(self, load_entrypoints: bool = True) -> None:
        self.pm = pluggy.PluginManager(hookspecs.PROJECT)
        self.pm.add_hookspecs(hookspecs)
        self._dist_of: dict[str, tuple[str, str]] = {}  # plugin name in pluggy -> (dist, ver)
        self._registry: dict[str, dict[str, PluginInfo]] | None = None
        self.failures: list[str] = []
        if load_entrypoints:
            self.load_entrypoints()

    # -- loading -----------------------------------------------------------------------------
    def _fail(self, message: str) -> None:
        self.failures.append(message)
        if strict():
            raise PluginError(message)
        warnings.warn(message + " (set AUTOLAB_STRICT_PLUGINS=1 to make this fatal)",
                      PluginWarning, stacklevel=3)

    def load_entrypoints(self, entry_points: Iterable[Any] | None = None) -> None:
        """Import every ``autolab`` entry point and register it; isolate failures."""
        if entry_points is None:
            entry_points = importlib.metadata.entry_points(group=ENTRY_POINT_GROUP)
        for ep in entry_points:
            dist = getattr(ep, "dist", None)
            dist_name = dist.name if dist is not None else "unknown"
            version = dist.version if dist is not None else ""
            if self.pm.has_plugin(ep.name):
                continue
            try:
                module = ep.load()
            except Exception as exc:
                self._fail(
                    f"autolab plugin {ep.name!r} from distribution {dist_name!r} failed to "
                    f"load: {type(exc).__name__}: {exc}"
                )
                continue
            try:
                self.register(module, name=ep.name, distribution=dist_name, version=version)
            except Exception as exc:  # e.g. pluggy's PluginValidationError: bad hookimpl args
                self._fail(
                    f"autolab plugin {ep.name!r} from distribution {dist_name!r} failed to "
                    f"register: {type(exc).__name__}: {exc}"
                )

    def register(
        self, plugin: Any, name: str | None = None, distribution: str = "", version: str = ""
    ) -> str:
        """Register a module or object with hook implementations (tests use this directly)."""
        try:
            registered = self.pm.register(plugin, name=name)
        except ValueError as exc:  # pluggy: name or object already registered
            raise PluginError(f"plugin {name!r} is already registered: {exc}") from None
        if registered is None:
            raise PluginError(f"plugin {name!r} is already registered")
        self._dist_of[registered] = (distribution or registered, version)
        self._registry = None
        return registered

    def unregister(self, name: str) -> None:
        self.pm.unregister(name=name)
        self._dist_of.pop(name, None)
        self._registry = None

    # -- the registry ------------------------------------------------------------------------
    def _collect(self) -> dict[str, dict[str, PluginInfo]]:
        registry: dict[str, dict[str, PluginInfo]] = {kind: {} for kind in PLUGIN_KINDS}
        for kind, hook_name in _REGISTER_HOOKS.items():
            base = PLUGIN_KINDS[kind]
            hook = getattr(self.pm.hook, hook_name)
            for impl in hook.get_hookimpls():  # registration order
                dist, version = self._dist_of.get(impl.plugin_name, (impl.plugin_name, ""))
                found: list[type[Any]] = []
                try:
                    impl.function(register=found.append)
                except Exception as exc:
                    self._fail(
                        f"autolab plugin {impl.plugin_name!r} from distribution {dist!r} "
                        f"raised in {hook_name}: {type(exc).__name__}: {exc}"
                    )
                    continue
                for cls in found:
                    problem = _check_class(cls, base)
                    if problem:
                        self._fail(f"{dist}: cannot register {cls!r} as a {kind}: {problem}")
                        continue
                    if cls.name in registry[kind]:
                        other = registry[kind][cls.name]
                        self._fail(
                            f"{dist}: {kind} name {cls.name!r} is already registered by "
                            f"{other.distribution!r}; keeping that one"
                        )
                        continue
                    registry[kind][cls.name] = PluginInfo(cls.name, kind, cls, dist, version)
        return registry

    @property
    def registry(self) -> dict[str, dict[str, PluginInfo]]:
        if self._registry is None:
            self._registry = self._collect()
        return self._registry

    def names(self, kind: str) -> list[str]:
        return sorted(self.registry[kind])

    def get(self, kind: str, name: str) -> type[Plugin]:
        """The class registered as ``name``; the error lists the valid names."""
        if kind not in PLUGIN_KINDS:
            raise PluginError(f"unknown plugin kind {kind!r}; valid: {', '.join(PLUGIN_KINDS)}")
        try:
            return self.registry[kind][name].cls
        except KeyError:
            valid = ", ".join(self.names(kind)) or "none installed"
            raise PluginError(
                f"no {kind.replace('_', ' ')} named {name!r}; installed: {valid}"
            ) from None

    def all(self) -> list[PluginInfo]:
        return [info for kind in PLUGIN_KINDS for _, info in sorted(self.registry[kind].items())]

    # -- lifecycle hooks ---------------------------------------------------------------------
    def notify(self, hook_name: str, **kwargs: Any) -> None:
        """Call a lifecycle hook on every plugin; a plugin's exception becomes a warning."""
        hook: Callable[..., Any] = getattr(self.pm.hook, hook_name)
        for impl in hook.get_hookimpls():  # type: ignore[attr-defined]
            try:
                impl.function(**{k: kwargs[k] for k in impl.argnames})
            except Exception as exc:
                warnings.warn(
                    f"autolab plugin {impl.plugin_name!r} raised in {hook_name}: "
                    f"{type(exc).__name__}: {exc}",
                    PluginWarning,
                    stacklevel=2,
                )


def _check_class(cls: Any, base: type[Plugin]) -> str | None:
    if not isinstance(cls, type) or not issubclass(cls, base):
        return f"it is not a subclass of autolab_core.{base.__name__}"
    if not isinstance(getattr(cls, "name", None), str) or not cls.name:
        return "it has no `name` class attribute"
    if getattr(cls, "__abstractmethods__", None):
        missing = ", ".join(sorted(cls.__abstractmethods__))
        return f"it does not implement {missing}"
    return None


_default: PluginManager | None = None


def get_plugin_manager() -> PluginManager:
    """The process-wide plugin manager, loading entry points on first use."""
    global _default
    if _default is None:
        _default = PluginManager()
    return _default


def lab_context(lab: Lab) -> PluginContext:
    """The :class:`PluginContext` plugins of ``lab`` are constructed with."""
    return PluginContext(lab_root=lab.root, state_dir=lab.state_dir, lab_name=lab.config.name)


def make_plugin(pm: PluginManager, kind: str, name: str, options: Mapping[str, Any],
                context: PluginContext) -> Any:
    """An instance of plugin ``name`` of ``kind``, or a :class:`PluginError` saying why it
    cannot run here (a missing extra, an old dependency)."""
    cls = pm.get(kind, name)
    reason = cls.available()
    if reason:
        raise PluginError(f"{kind.replace('_', ' ')} {name!r} cannot run here: {reason}")
    return cls(dict(options), context)


def make_store(lab: Lab, pm: PluginManager | None = None) -> MetricStore:
    """The lab's configured metric store (``[metrics] store``)."""
    name = lab.config.metric_store
    store: MetricStore = make_plugin(pm or get_plugin_manager(), "metric_store", name,
                                     lab.config.metric_store_options.get(name, {}),
                                     lab_context(lab))
    return store
