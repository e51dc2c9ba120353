"""The reporting package's import graph: no circle inside it, and nothing above it.

The graph is read by grimp (the library import-linter uses), counting imports inside
functions too: a lazy import closes a circle as surely as a top-level one.
"""

from __future__ import annotations

import grimp

PACKAGE = "autolab.reporting"
#: The run loop and its assembly sit above reporting: reporting gets the store passed in.
ABOVE = ("autolab.session", "autolab.orchestrator", "autolab.cli", "autolab.__main__")


def reporting_graph() -> dict[str, set[str]]:
    graph = grimp.build_graph("autolab", "autolab_core", cache_dir=None)
    modules = {m for m in graph.modules if m == PACKAGE or m.startswith(PACKAGE + ".")}
    return {m: graph.find_modules_directly_imported_by(m) for m in modules}


def find_cycle(edges: dict[str, set[str]]) -> list[str] | None:
    """One import circle among the keys of ``edges`` (as a path), or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(edges[node] & edges.keys()):
            if state.get(nxt) == 1:
                return [*path[path.index(nxt):], nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        path.pop()
        state[node] = 2
        return None

    for node in sorted(edges):
        if node not in state and (found := visit(node)):
            return found
    return None


def test_find_cycle_finds_a_planted_circle() -> None:
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": {"x"}, "c": {"a", "b"}}) is None


def test_no_import_cycle_inside_reporting() -> None:
    edges = reporting_graph()
    assert {f"{PACKAGE}.review", f"{PACKAGE}.console", f"{PACKAGE}.lab"} <= edges.keys()
    assert find_cycle(edges) is None, " -> ".join(find_cycle(edges) or [])


def test_reporting_never_imports_the_loop_or_the_cli() -> None:
    upward = {(m, d) for m, deps in reporting_graph().items() for d in deps
              if any(d == a or d.startswith(a + ".") for a in ABOVE)}
    assert upward == set()
