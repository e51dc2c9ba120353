"""autolab_core.plugins: registration, discovery through entry points, failure isolation.

Discovery tests build real (if tiny) installed distributions in a temporary directory: a
module plus a ``<name>-<version>.dist-info`` with ``METADATA`` and ``entry_points.txt``, put
on ``sys.path`` so that ``importlib.metadata`` finds them exactly as it finds pip-installed
plugins. Most tests use their own ``PluginManager(load_entrypoints=False)`` so that they do
not depend on which built-in plugin modules exist yet.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import sys
import uuid
import warnings
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest

from autolab_core import plugins as plugins_module
from autolab_core.errors import PluginError
from autolab_core.hookspecs import hookimpl
from autolab_core.interfaces import LLM, JobBackend, MetricStore, PaperSource
from autolab_core.models import JobHandle, JobState, JobStatus, LogChunk, Paper
from autolab_core.plugins import PluginManager, PluginWarning, get_plugin_manager


# -- plugin classes ------------------------------------------------------------------------------
class GoodBackend(JobBackend):
    name = "good"

    def submit(self, spec: Any) -> JobHandle:
        return JobHandle(self.name, "1", spec.experiment_id)

    def poll(self, handles: Sequence[JobHandle]) -> dict[str, JobState]:
        return {h.job_id: JobState(JobStatus.SUCCEEDED) for h in handles}

    def logs(self, handle: JobHandle, since: int = 0) -> LogChunk:
        return LogChunk("", since)

    def cancel(self, handle: JobHandle) -> None:
        pass

    def reattach(self, job_id: str) -> JobHandle | None:
        return None


class OtherBackend(GoodBackend):
    name = "other"


class GoodLLM(LLM):
    name = "echo"

    def complete(self, messages: Any, schema: Any = None, **kw: Any) -> Any:
        raise NotImplementedError


class GoodPapers(PaperSource):
    name = "shelf"

    def search(self, query: str, limit: int = 10, since: str | None = None) -> list[Paper]:
        return []

    def get(self, paper_id: str) -> Paper | None:
        return None


class GoodStore(MetricStore):
    name = "memory"

    def append(self, points: Any) -> None:
        pass

    def finish(self, experiment_id: str) -> None:
        pass

    def query(self, experiment_ids: Any = None, names: Any = None) -> Any:
        return None

    def export_parquet(self, path: Path) -> Path:
        return path


class Unavailable(GoodBackend):
    name = "unavailable"

    @classmethod
    def available(cls) -> str | None:
        raise RuntimeError("probe exploded")


def backends(*classes: type[Any]) -> Any:
    """A plugin object whose register hook registers ``classes`` as backends."""

    class _Plugin:
        @hookimpl
        def autolab_register_backends(self, register: Callable[[type[Any]], None]) -> None:
            for cls in classes:
                register(cls)

    return _Plugin()


@pytest.fixture
def pm(monkeypatch: pytest.MonkeyPatch) -> PluginManager:
    monkeypatch.delenv("AUTOLAB_STRICT_PLUGINS", raising=False)
    return PluginManager(load_entrypoints=False)


def messages(record: Any) -> list[str]:
    return [str(w.message) for w in record if issubclass(w.category, PluginWarning)]


# -- registering directly, as llm's tests do ---------------------------------------------------
def test_register_and_unregister(pm: PluginManager) -> None:
    with pytest.raises(PluginError, match="no backend named 'good'; installed: none installed"):
        pm.get("backend", "good")
    pm.register(backends(GoodBackend), name="undo-me")
    try:
        assert pm.get("backend", "good") is GoodBackend
        assert pm.names("backend") == ["good"]
    finally:
        pm.unregister("undo-me")
    assert pm.names("backend") == []


def test_all_four_kinds_and_their_origin(pm: PluginManager) -> None:
    class Everything:
        @hookimpl
        def autolab_register_backends(self, register: Any) -> None:
            register(GoodBackend)
            register(OtherBackend)

        @hookimpl
        def autolab_register_llms(self, register: Any) -> None:
            register(GoodLLM)

        @hookimpl
        def autolab_register_paper_sources(self, register: Any) -> None:
            register(GoodPapers)

        @hookimpl
        def autolab_register_metric_stores(self, register: Any) -> None:
            register(GoodStore)

    pm.register(Everything(), name="everything", distribution="autolab-everything",
                version="1.2.3")
    listed = [(i.name, i.kind, i.distribution, i.version) for i in pm.all()]
    assert listed == [
        ("good", "backend", "autolab-everything", "1.2.3"),
        ("other", "backend", "autolab-everything", "1.2.3"),
        ("echo", "llm", "autolab-everything", "1.2.3"),
        ("shelf", "paper_source", "autolab-everything", "1.2.3"),
        ("memory", "metric_store", "autolab-everything", "1.2.3"),
    ]
    assert pm.get("llm", "echo") is GoodLLM and pm.get("metric_store", "memory") is GoodStore
    pm.register(backends(Unavailable), name="bare")  # no distribution: named after itself
    assert pm.registry["backend"]["unavailable"].distribution == "bare"
    assert pm.registry["backend"]["good"].available() is None
    assert pm.registry["backend"]["unavailable"].available() == (
        "available() raised RuntimeError: probe exploded")


def test_get_errors_list_the_valid_choices(pm: PluginManager) -> None:
    pm.register(backends(GoodBackend, OtherBackend), name="two")
    with pytest.raises(PluginError, match=r"^no backend named 'slurm'; installed: good, other$"):
        pm.get("backend", "slurm")
    with pytest.raises(PluginError, match="no paper source named 'x'; installed: none installed"):
        pm.get("paper_source", "x")
    with pytest.raises(PluginError, match=r"unknown plugin kind 'queue'; valid: backend, llm, "
                                          r"paper_source, metric_store"):
        pm.get("queue", "x")


def test_raising_register_hook_warns_once_naming_its_distribution(pm: PluginManager) -> None:
    class Broken:
        @hookimpl
        def autolab_register_backends(self, register: Any) -> None:
            raise RuntimeError("cannot find my config")

    pm.register(backends(GoodBackend), name="fine", distribution="fine-dist")
    pm.register(Broken(), name="broken", distribution="autolab-broken")
    with pytest.warns(PluginWarning) as record:
        assert pm.names("backend") == ["good"]
        assert pm.get("backend", "good") is GoodBackend
    assert messages(record) == [
        "autolab plugin 'broken' from distribution 'autolab-broken' raised in "
        "autolab_register_backends: RuntimeError: cannot find my config "
        "(set AUTOLAB_STRICT_PLUGINS=1 to make this fatal)"
    ]
    assert len(pm.failures) == 1


@pytest.mark.parametrize("value", ["1", "yes", "true"])
def test_strict_mode_makes_failures_fatal(pm: PluginManager, monkeypatch: pytest.MonkeyPatch,
                                          value: str) -> None:
    class Broken:
        @hookimpl
        def autolab_register_llms(self, register: Any) -> None:
            raise RuntimeError("boom")

    pm.register(Broken(), name="broken", distribution="autolab-broken")
    monkeypatch.setenv("AUTOLAB_STRICT_PLUGINS", value)
    with pytest.raises(PluginError, match="'autolab-broken' raised in autolab_register_llms"):
        pm.names("llm")


@pytest.mark.parametrize("value", ["", "0", "false", "no"])
def test_strict_mode_off_values(pm: PluginManager, monkeypatch: pytest.MonkeyPatch,
                                value: str) -> None:
    monkeypatch.setenv("AUTOLAB_STRICT_PLUGINS", value)
    assert not plugins_module.strict()


class NotABackend:
    name = "plain"


class NoName(GoodBackend):
    name = ""


class Abstract(JobBackend):
    name = "abstract"

    def submit(self, spec: Any) -> JobHandle:
        raise NotImplementedError


@pytest.mark.parametrize(
    ("cls", "problem"),
    [(NotABackend, "it is not a subclass of autolab_core.JobBackend"),
     (GoodLLM, "it is not a subclass of autolab_core.JobBackend"),
     (NoName, "it has no `name` class attribute"),
     (Abstract, "it does not implement cancel, logs, poll, reattach"),
     ("good", "it is not a subclass of autolab_core.JobBackend")],
)
def test_bad_classes_are_refused_with_a_reason(pm: PluginManager, cls: Any, problem: str) -> None:
    pm.register(backends(cls, GoodBackend), name="mixed", distribution="autolab-mixed")
    with pytest.warns(PluginWarning) as record:
        assert pm.names("backend") == ["good"]  # the good class of the same plugin survives
    (message,) = messages(record)
    assert message.startswith(f"autolab-mixed: cannot register {cls!r} as a backend: {problem}")


def test_bug_duplicate_name_keeps_the_first_registered(pm: PluginManager) -> None:
    """BUG (autolab_core/plugins.py _collect): ``reversed(hook.get_hookimpls())`` walks the
    implementations newest first, not in registration order as its comment says, so a later
    plugin silently replaces an earlier one's class and the warning blames the earlier one."""

    class Impostor(GoodBackend):
        name = "good"

    pm.register(backends(GoodBackend), name="first", distribution="autolab")
    pm.register(backends(Impostor), name="second", distribution="autolab-impostor")
    with pytest.warns(PluginWarning) as record:
        assert pm.get("backend", "good") is GoodBackend
    assert messages(record)[0].startswith(
        "autolab-impostor: backend name 'good' is already registered by 'autolab'; keeping")


def test_duplicate_name_warns_naming_both_distributions(pm: PluginManager) -> None:
    class Twin(GoodBackend):
        name = "good"

    pm.register(backends(GoodBackend), name="a", distribution="dist-a")
    pm.register(backends(Twin), name="b", distribution="dist-b")
    with pytest.warns(PluginWarning) as record:
        assert pm.names("backend") == ["good"]
    (message,) = messages(record)
    assert "backend name 'good' is already registered by" in message
    assert "dist-a" in message and "dist-b" in message


def test_bug_registering_twice_is_a_plugin_error(pm: PluginManager) -> None:
    """BUG (autolab_core/plugins.py PluginManager.register): pluggy raises ValueError for a
    name or object that is already registered (it returns None only for blocked names), so the
    documented PluginError never comes."""
    plugin = backends(GoodBackend)
    pm.register(plugin, name="once")
    with pytest.raises(PluginError, match="already registered"):
        pm.register(backends(OtherBackend), name="once")
    with pytest.raises(PluginError, match="already registered"):
        pm.register(plugin, name="again")


def test_lifecycle_hooks_isolate_exceptions(pm: PluginManager) -> None:
    calls: list[tuple[str, Any]] = []

    class Grumpy:
        @hookimpl
        def autolab_experiment_finished(self, lab: Any, experiment: Any) -> None:
            raise ValueError("webhook down")

    class Notifier:
        @hookimpl
        def autolab_experiment_finished(self, experiment: Any) -> None:  # a subset of args
            calls.append(("finished", experiment))

        @hookimpl
        def autolab_change_promoted(self, lab: Any, experiment: Any, commit: str,
                                    improvement: float) -> None:
            calls.append(("promoted", (commit, improvement)))

    pm.register(Notifier(), name="notifier")
    pm.register(Grumpy(), name="grumpy")
    with pytest.warns(PluginWarning) as record:
        pm.notify("autolab_experiment_finished", lab="L", experiment="E1")
    assert messages(record) == [
        "autolab plugin 'grumpy' raised in autolab_experiment_finished: ValueError: webhook down"]
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no warning when nothing raises
        pm.notify("autolab_change_promoted", lab="L", experiment="E1", commit="abc",
                  improvement=0.02)
        pm.notify("autolab_anomaly", lab="L", experiment="E1", flag="nan", reason="x")
    assert calls == [("finished", "E1"), ("promoted", ("abc", 0.02))]


def test_get_plugin_manager_is_one_per_process(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AUTOLAB_STRICT_PLUGINS", raising=False)
    monkeypatch.setattr(plugins_module, "_default", None)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", PluginWarning)  # built-ins still being written
        first = get_plugin_manager()
    assert get_plugin_manager() is first


# -- fake installed distributions ----------------------------------------------------------------
GOOD_MODULE = '''
from autolab_core import hookimpl
from autolab_core.models import JobHandle, JobState, JobStatus, LogChunk
from autolab_core.interfaces import JobBackend


class FakeBackend(JobBackend):
    name = "fake-good"

    def submit(self, spec):
        return JobHandle(self.name, "1", spec.experiment_id)

    def poll(self, handles):
        return {h.job_id: JobState(JobStatus.SUCCEEDED) for h in handles}

    def logs(self, handle, since=0):
        return LogChunk("", since)

    def cancel(self, handle):
        pass

    def reattach(self, job_id):
        return None


@hookimpl
def autolab_register_backends(register):
    register(FakeBackend)
'''


class FakeDists:
    """Writes distributions into one ``sys.path`` entry; forgets their modules afterwards."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.modules: list[str] = []

    def add(self, dist: str, body: str, entry_points: dict[str, str] | None = None,
            version: str = "0.1") -> str:
        module = f"{dist.replace('-', '_')}_{uuid.uuid4().hex[:8]}"
        (self.root / f"{module}.py").write_text(body)
        info = self.root / f"{dist.replace('-', '_')}-{version}.dist-info"
        info.mkdir()
        (info / "METADATA").write_text(
            f"Metadata-Version: 2.1\nName: {dist}\nVersion: {version}\n")
        eps = entry_points or {dist: "{module}"}
        lines = "".join(f"{name} = {target.format(module=module)}\n"
                        for name, target in eps.items())
        (info / "entry_points.txt").write_text(f"[autolab]\n{lines}")
        self.modules.append(module)
        importlib.invalidate_caches()
        return module

    def entry_points(self, dist: str) -> list[Any]:
        return [ep for ep in importlib.metadata.entry_points(group="autolab")
                if ep.dist is not None and ep.dist.name == dist]


@pytest.fixture
def fake_dists(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeDists]:
    monkeypatch.delenv("AUTOLAB_STRICT_PLUGINS", raising=False)
    site = tmp_path / "site"
    site.mkdir()
    monkeypatch.syspath_prepend(str(site))
    dists = FakeDists(site)
    yield dists
    for module in dists.modules:
        sys.modules.pop(module, None)


def test_discovers_installed_distributions_and_isolates_a_broken_one(
    fake_dists: FakeDists,
) -> None:
    fake_dists.add("fake-good-dist", GOOD_MODULE, version="2.0.1")
    fake_dists.add("fake-broken-dist", "raise ImportError('needs libfoo: pip install foo')")
    with pytest.warns(PluginWarning) as record:
        pm = PluginManager()  # the real thing: every `autolab` entry point on sys.path
        info = pm.registry["backend"]["fake-good"]
    assert (info.distribution, info.version) == ("fake-good-dist", "2.0.1")
    assert pm.get("backend", "fake-good").__module__.startswith("fake_good_dist_")
    broken = [m for m in messages(record) if "fake-broken-dist" in m]
    assert len(broken) == 1
    assert broken[0].startswith("autolab plugin 'fake-broken-dist' from distribution "
                                "'fake-broken-dist' failed to load: ImportError: needs libfoo")
    assert not [m for m in messages(record) if "fake-good-dist" in m]


def test_strict_mode_makes_a_broken_distribution_fatal(
    fake_dists: FakeDists, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake_dists.add("fake-broken-dist", "raise ImportError('needs libfoo')")
    monkeypatch.setenv("AUTOLAB_STRICT_PLUGINS", "1")
    pm = PluginManager(load_entrypoints=False)
    with pytest.raises(PluginError, match="'fake-broken-dist' failed to load: ImportError"):
        pm.load_entrypoints(fake_dists.entry_points("fake-broken-dist"))


def test_an_entry_point_name_is_loaded_once(fake_dists: FakeDists) -> None:
    fake_dists.add("fake-good-dist", GOOD_MODULE)
    pm = PluginManager(load_entrypoints=False)
    eps = fake_dists.entry_points("fake-good-dist")
    pm.load_entrypoints(eps)
    pm.load_entrypoints(eps)  # e.g. a second discovery pass: no error, no duplicate
    assert pm.names("backend") == ["fake-good"] and pm.failures == []


BAD_SIGNATURE = '''
from autolab_core import hookimpl


@hookimpl
def autolab_register_backends(registrar):  # the hookspec's argument is `register`
    pass
'''


@pytest.mark.parametrize(
    ("body", "entry_points", "backends"),
    [(BAD_SIGNATURE, None, ["fake-good"]),
     (GOOD_MODULE.replace('"fake-good"', '"fake-twice"'),
      {"fake-bad-dist": "{module}", "fake-bad-dist-again": "{module}"},
      ["fake-good", "fake-twice"])],
    ids=["hookimpl-with-wrong-arguments", "same-module-under-two-names"],
)
def test_bug_a_bad_entry_point_warns_instead_of_crashing_discovery(
    fake_dists: FakeDists, body: str, entry_points: dict[str, str] | None, backends: list[str]
) -> None:
    """BUG (autolab_core/plugins.py load_entrypoints): ``self.register(module, ...)`` is outside
    the try, so pluggy's PluginValidationError (a hookimpl whose arguments are not in the
    hookspec) or ValueError (a module already registered under another entry-point name)
    escapes and ``PluginManager()`` crashes, taking every other plugin with it."""
    fake_dists.add("fake-bad-dist", body, entry_points)
    fake_dists.add("fake-good-dist", GOOD_MODULE)
    pm = PluginManager(load_entrypoints=False)
    with pytest.warns(PluginWarning) as record:
        pm.load_entrypoints(
            fake_dists.entry_points("fake-bad-dist") + fake_dists.entry_points("fake-good-dist"))
    assert pm.names("backend") == backends
    assert any("'fake-bad-dist'" in m for m in messages(record))
