"""The layering of werkpool's modules: no import cycles, and every import goes one way, down.

The rule: a module imports only from modules in a lower layer of :data:`LAYERS`. Where a lower
module must call upward (a future asking its pool to cancel a job, a map asking the pool to enqueue
a batch), it declares a ``Protocol`` of what it needs and the upper module passes itself, or a part
of itself, in. It never imports the upper module, not under ``if TYPE_CHECKING:`` either: an
annotation-only import is still a dependency that a reader follows and a type checker sees. A new
module must be given a layer in :data:`LAYERS` before it can land.

The import graph is read from the source with :mod:`ast`: every ``import werkpool...`` and every
``from ... import`` of a werkpool module, relative or absolute, at any depth (inside functions and
``if TYPE_CHECKING:`` blocks too). No event loop, no import of the package.
"""

from __future__ import annotations

import ast
import functools
from collections import deque
from itertools import pairwise
from pathlib import Path

PACKAGE = "werkpool"
PACKAGE_DIR = Path(__file__).resolve().parents[1] / PACKAGE

#: Each module of werkpool/ and its layer. A module may import only modules of a strictly lower
#: layer. Modules listed here but absent from disk are skipped; a module on disk must be listed.
LAYERS: dict[str, int] = {
    # 0: leaves, importing nothing of werkpool
    "_exceptions": 0,
    "_validate": 0,
    "_statistics": 0,
    "_events": 0,  # the Event record and the Hook protocol
    "_extras": 0,  # the error of an extra's module when the extra is not installed
    "_ratelimit_headers": 0,  # servers' rate-limit headers read as budgets (pure functions)
    # 1: per-job options (timeout, retry policy, default backoff); limits as values
    "_options": 1,
    "_specs": 1,
    "_logging": 1,  # LoggingHook: a pool's events as stdlib log records
    "_progress": 1,  # werkpool.progress: a live progress bar fed by a pool's events (rich optional)
    "_metrics": 1,  # the metric rules (counts, gauge deltas, paused time) of otel/prometheus
    # 2: the job record, its states and outcomes
    "_job": 2,
    "_otel": 2,  # OpenTelemetryHook: a span per attempt and metrics (the optional werkpool[otel])
    "_prometheus": 2,  # PrometheusHook: prometheus_client metrics (werkpool[prometheus])
    # 3: admission limits (local and remote)
    "_limits": 3,
    # 4: the lines of jobs per key, with their own limits
    "_lanes": 4,
    # 5: the sans-I/O core, where a job's state changes
    "_scheduler": 5,
    # 6: the parts a running pool composes
    "_futures": 6,
    "_room": 6,  # the max_pending line
    "_binding": 6,  # which event loop a pool belongs to
    "_remote": 6,  # the I/O half of remote limits
    "_redis": 6,  # shared limits kept in Redis (the optional werkpool[redis])
    "_threads": 6,  # blocking functions as jobs, run in the pool's worker threads
    "_hooks": 6,  # the pool's hooks: events built and handed out, a failing hook isolated
    # 7: the crew of worker tasks (start, park, wake, retire)
    "_crew": 7,
    # 8: the worker task: run an attempt, report its outcome
    "_workers": 8,
    # 9: one pool's lifecycle: loop binding, submission gate, task groups, stopping
    "_lifecycle": 9,
    # 10: map's bounded stream of results
    "_map": 10,
    # 11: WorkerPool, the public face
    "_pool": 11,
    # 12: the package, which may import any module
    "__init__": 12,
    "redis": 12,  # the public face of the optional Redis store
    "otel": 12,  # the public face of the OpenTelemetry hook
    "prometheus": 12,  # the public face of the Prometheus hook
    "_httpx": 12,  # an httpx transport whose requests go through a pool (werkpool[httpx])
    # 13: the public face of the httpx transport
    "httpx": 13,
}


@functools.cache
def import_graph(package_dir: Path = PACKAGE_DIR) -> dict[str, dict[str, str]]:
    """Map each module of the package to the werkpool modules it imports, and where it does so.

    The result is ``{module: {imported module: "file.py:line"}}`` for every ``*.py`` of
    *package_dir* (``__init__`` for the package itself).
    """
    modules = {path.stem: path for path in sorted(package_dir.glob("*.py"))}
    graph: dict[str, dict[str, str]] = {}
    for name, path in modules.items():
        lines: dict[str, int] = {}
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        for node in ast.walk(tree):
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                for target in _imported_modules(node, modules):
                    if target != name:
                        lines[target] = min(node.lineno, lines.get(target, node.lineno))
        graph[name] = {target: f"{path.name}:{line}" for target, line in sorted(lines.items())}
    return graph


def _imported_modules(node: ast.Import | ast.ImportFrom, modules: dict[str, Path]) -> list[str]:
    """The werkpool modules that *node* imports (``__init__`` for the package itself)."""
    if isinstance(node, ast.Import):
        return [
            _module_of(alias.name, modules)
            for alias in node.names
            if alias.name == PACKAGE or alias.name.startswith(PACKAGE + ".")
        ]
    if node.level == 0:
        absolute = node.module or ""
    elif node.level == 1:  # werkpool is flat: one dot is the package itself
        absolute = PACKAGE + (f".{node.module}" if node.module else "")
    else:
        raise AssertionError(
            f"line {node.lineno}: an import above the package (level {node.level})"
        )
    if absolute == PACKAGE:
        # `from . import _job` imports a module; `from . import WorkerPool` a name of __init__.
        return [alias.name if alias.name in modules else "__init__" for alias in node.names]
    if absolute.startswith(PACKAGE + "."):
        return [_module_of(absolute, modules)]
    return []


def _module_of(dotted: str, modules: dict[str, Path]) -> str:
    """``werkpool`` -> ``__init__``; ``werkpool._job`` (or ``werkpool._job.x``) -> ``_job``."""
    parts = dotted.split(".")
    if len(parts) == 1:
        return "__init__"
    assert parts[1] in modules, f"{dotted} is not a module of werkpool/"
    return parts[1]


def _cycles(graph: dict[str, dict[str, str]]) -> list[list[str]]:
    """One shortest cycle through each edge that lies on a cycle, without repeats.

    Together they cover every import that takes part in a cycle, so the report names each import
    that has to go (or move down a layer), not only one loop of a tangle.
    """
    found: list[list[str]] = []
    seen: set[tuple[str, ...]] = set()
    for source in sorted(graph):
        for target in sorted(graph[source]):
            path = _shortest_path(graph, target, source)
            if path is None:
                continue
            cycle = [source, *path]  # source -> target -> ... -> source
            loop = cycle[:-1]
            start = loop.index(min(loop))
            key = tuple(loop[start:] + loop[:start])
            if key not in seen:
                seen.add(key)
                found.append([*key, key[0]])
    return sorted(found)


def _shortest_path(graph: dict[str, dict[str, str]], start: str, goal: str) -> list[str] | None:
    """The shortest import path from *start* to *goal* (both included), or None (BFS)."""
    previous: dict[str, str | None] = {start: None}
    queue = deque([start])
    while queue:
        module = queue.popleft()
        if module == goal:
            path = [module]
            while (step := previous[path[-1]]) is not None:
                path.append(step)
            return path[::-1]
        for imported in sorted(graph.get(module, {})):
            if imported not in previous:
                previous[imported] = module
                queue.append(imported)
    return None


def test_the_import_graph_sees_every_kind_of_import(tmp_path: Path) -> None:
    """TYPE_CHECKING, function-level, relative, ``from . import`` and absolute imports all count."""
    sources = {
        "__init__": "from ._a import A\n",
        "_a": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from ._b import B\n",
        "_b": "def later():\n    from . import _c\n",
        "_c": "import werkpool._d\nfrom werkpool import WorkerPool\nimport anyio\n",
        "_d": "from . import _c as again, WorkerPool\n",
    }
    for name, source in sources.items():
        (tmp_path / f"{name}.py").write_text(source, encoding="utf-8")
    graph = import_graph(tmp_path)
    assert graph == {
        "__init__": {"_a": "__init__.py:1"},
        "_a": {"_b": "_a.py:3"},
        "_b": {"_c": "_b.py:2"},
        "_c": {"__init__": "_c.py:2", "_d": "_c.py:1"},
        "_d": {"__init__": "_d.py:1", "_c": "_d.py:1"},
    }
    assert _cycles(graph) == [
        ["__init__", "_a", "_b", "_c", "__init__"],
        ["__init__", "_a", "_b", "_c", "_d", "__init__"],
        ["_c", "_d", "_c"],
    ]


def test_werkpool_modules_import_each_other_without_cycles() -> None:
    """No chain of imports (TYPE_CHECKING ones included) leads from a module back to itself."""
    graph = import_graph()
    assert graph, f"no modules found in {PACKAGE_DIR}"
    report = []
    for cycle in _cycles(graph):
        where = ", ".join(f"{graph[a][b]} imports {b}" for a, b in pairwise(cycle))
        report.append(f"  {' -> '.join(cycle)}\n      ({where})")
    assert not report, "import cycles in werkpool/:\n" + "\n".join(report)


def test_every_werkpool_module_has_a_layer() -> None:
    """A module on disk that LAYERS does not place fails here: give it a layer first."""
    unplaced = sorted(set(import_graph()) - set(LAYERS))
    assert not unplaced, f"werkpool modules missing from LAYERS in {__file__}: {unplaced}"


def test_werkpool_modules_import_only_lower_layers() -> None:
    """Each module imports only modules of a strictly lower layer in LAYERS."""
    graph = import_graph()
    upward = [
        f"  {module} (layer {LAYERS[module]}) imports {imported} (layer {LAYERS[imported]}) "
        f"at {where}"
        for module, imports in sorted(graph.items())
        if module in LAYERS
        for imported, where in sorted(imports.items())
        if imported in LAYERS and LAYERS[imported] >= LAYERS[module]
    ]
    assert not upward, "imports that do not go down a layer:\n" + "\n".join(upward)
