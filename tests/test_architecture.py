"""The layering of werkpool: packages in ranks, modules in layers, no import cycles.

Two rules, both read from the source:

- **Packages.** werkpool is a sans-I/O core (``_core``), an I/O runtime that drives it
  (``_runtime``), the hooks it ships (``_observe``), the public facade (``_facade``, ``_pool``,
  ``__init__``) and one package per optional integration (``redis``, ``httpx``, ``otel``,
  ``prometheus``). A module imports from its own package or from a package of a strictly lower
  rank in :data:`PACKAGES`: the core imports nothing from the runtime, the runtime nothing from
  ``_observe`` or an integration, and no integration from another.
- **Modules.** A module imports only from modules of a strictly lower layer of :data:`LAYERS`.
  Where a lower module must call upward (a future asking its pool to cancel a job, a map asking
  the pool to enqueue a batch), it declares a ``Protocol`` of what it needs and the upper module
  passes itself, or a part of itself, in. It never imports the upper module, not under
  ``if TYPE_CHECKING:`` either: an annotation-only import is still a dependency that a reader
  follows and a type checker sees. A new module must be given a layer before it can land.

The README's architecture table is checked against :data:`LAYERS`: every module in it, in its
layer. The import graph is read with :mod:`ast`: every ``import werkpool...`` and every
``from ... import`` of a werkpool module, relative or absolute, at any depth (inside functions
and ``if TYPE_CHECKING:`` blocks too). No event loop, no import of the package.
"""

from __future__ import annotations

import ast
import functools
import re
from collections import deque
from itertools import pairwise
from pathlib import Path

PACKAGE = "werkpool"
PACKAGE_DIR = Path(__file__).resolve().parents[1] / PACKAGE
README = Path(__file__).resolve().parents[1] / "README.md"

#: The rank of each part of werkpool (a subpackage, or a module at the top). A module may import
#: from its own part or from a part of strictly lower rank.
PACKAGES: dict[str, int] = {
    "_core": 0,  # sans-I/O: job records, limits, lanes, the scheduler; no event loop
    "_extras": 0,  # the error of an integration whose extra is not installed
    "_runtime": 1,  # I/O: the loop binding, workers, futures, threads, the lifecycle, map
    "_observe": 1,  # the hooks werkpool ships: logging, progress, shared metric rules
    "_facade": 2,  # WorkerPool's faces: its methods by concept (control, submission, threads)
    "_pool": 3,  # WorkerPool, the public face, composed of its faces
    "__init__": 4,  # the package's public names
    "redis": 5,  # werkpool.redis: limits shared through Redis (werkpool[redis])
    "httpx": 5,  # werkpool.httpx: an httpx transport through a pool (werkpool[httpx])
    "otel": 5,  # werkpool.otel: OpenTelemetry spans and metrics (werkpool[otel])
    "prometheus": 5,  # werkpool.prometheus: Prometheus metrics (werkpool[prometheus])
}

#: Each module of werkpool/ (dotted, below ``werkpool``; a package by its own name) and its
#: layer. A module may import only modules of a strictly lower layer. A module on disk must be
#: listed; one listed but absent from disk fails as well.
LAYERS: dict[str, int] = {
    # _core 0: leaves, importing nothing of werkpool
    "_core": 0,
    "_core._exceptions": 0,
    "_core._validate": 0,
    "_core._statistics": 0,
    "_core._events": 0,  # the JobEvent record and the Hook protocol
    "_core._budgets": 0,  # a server's budgets as records (Budget, HeaderReport), less_sent
    "_core._header_values": 0,  # header values: decimals, Go durations, RFC 3339 and HTTP dates
    "_core._structured_fields": 0,  # RFC 9651 structured fields (the IETF RateLimit fields)
    "_core._budget_hold": 0,  # a server's budget held by a rate or window until it resets
    "_extras": 0,
    # _core 1: per-job options (timeout, retry policy, default backoff); limits as values
    "_core._options": 1,
    "_core._specs": 1,
    "_core._header_fields": 1,  # what a header parser sees: checked fields, HeaderParser
    # _core 2: the job record, its states and outcomes
    "_core._job": 2,
    "_core._header_dialects": 2,  # the header dialects (OpenAI, Anthropic, GitHub, IETF)
    # _core 3: admission limits: the local limit's base and defaults, the remote-limit protocol
    "_core._limit": 3,
    "_core._remote_limit": 3,
    "_core._event_sink": 3,  # who hears of the transitions; events held back meanwhile
    "_core._ratelimit_headers": 3,  # parse_headers: a response's headers read as budgets
    # _core 4: the live limits (GCRA rate, sliding window, counts); the lines of jobs per key
    "_core._rate_limit": 4,
    "_core._window_limit": 4,
    "_core._count_limit": 4,
    "_core._lanes": 4,
    "_core._reservation": 4,  # the remote limits' I/O the scheduler hands a worker
    # _core 5: what holds the starts back (limits, lanes, pauses, a provider's word); a limit
    # value made live
    "_core._holds": 5,
    "_core._limits": 5,  # build: the live limit of each limit value
    # _core 6: the sans-I/O state machine, where a job's state changes
    "_core._scheduler": 6,
    # _core 6: the limits as configured: fold, build, check costs, replace
    "_core._limitset": 6,
    # _observe 6: hooks fed by events
    "_observe": 6,
    "_observe._logging": 6,  # LoggingHook: events as stdlib log records
    "_observe._metrics": 6,  # the metric rules (counts, gauge deltas, paused time)
    "_observe._rates": 6,  # the progress bar's start and finish rates
    "_observe._display": 6,  # what one draw of the bar shows; the Renderer protocol
    # _observe 7: the progress bar's renderers
    "_observe._plain_renderer": 7,  # one plain line rewritten with "\r"
    "_observe._rich_renderer": 7,  # rich's progress display (rich optional)
    # _observe 8: the progress bar: a hook, its drawing task, the time to go
    "_observe._progress": 8,  # werkpool.progress
    # _runtime 6: the parts a running pool composes
    "_runtime": 6,
    "_runtime._futures": 6,
    "_runtime._room": 6,  # the max_pending line
    "_runtime._binding": 6,  # which event loop a pool belongs to
    "_runtime._remote": 6,  # the I/O half of remote limits
    "_runtime._threads": 6,  # blocking functions as jobs, run in the pool's worker threads
    "_runtime._hooks": 7,  # events built and handed out, a failing hook isolated
    "_runtime._weak": 6,  # back-references to the lifecycle held weakly (no cycles)
    "_runtime._exits": 6,  # what leaves a stopping pool: its failure, raised as it was
    # _runtime 7: the crew of worker tasks (start, park, wake, retire)
    "_runtime._crew": 7,
    "_runtime._control": 8,  # run-time changes of the size, limits, pauses, pushbacks
    "_runtime._background": 7,  # runs a pool used without `async with` in a task
    # _runtime 8: the worker task: run an attempt, report its outcome
    "_runtime._workers": 8,
    # _runtime 9: one pool's lifecycle: loop binding, submission gate, task groups, stopping
    "_runtime._lifecycle": 9,
    # _runtime 10: map's bounded stream of results
    "_runtime._map": 10,
    # _facade 11: WorkerPool's faces, siblings that import no other face
    "_facade": 11,
    "_facade._control": 11,  # run-time control: the limits, hooks and pauses
    "_facade._submission": 11,  # run, start_soon, call, submit, map
    "_facade._threads": 11,  # the _sync twins: blocking functions in the pool's threads
    "_facade._settle": 11,  # werkpool.settle(): a job's actual cost, from inside it
    # 12: WorkerPool, the public face, composed of its faces
    "_pool": 12,
    # 13: the package's public names (no integration's implementation imports them)
    "__init__": 13,
    # 13: the integrations' implementations
    "redis._scripts": 13,  # the Lua scripts (lua/*.lua) and their calling convention
    "redis._degraded": 13,  # degraded mode: local shares while the store is unavailable
    "httpx._messages": 13,  # what the transport reads from a request and its response
    "httpx._statistics": 13,  # RequestStatistics, TransportStatistics
    "otel._hook": 13,
    "prometheus._hook": 13,
    # 14: one pool's Redis-shared limits (its RemoteLimit); one request through a PoolTransport
    "redis._shared": 14,
    "redis._batch": 14,  # the store's ADMIT calls: concurrent admissions share one call
    "httpx._exchange": 14,  # one request's attempts and hand-over, through ExchangeHost
    # 15: the Redis store (script calls, restart recovery, leases, pub/sub); the transport
    "redis._store": 15,
    "httpx._transport": 15,  # PoolTransport: settings, counts, one job per request
    # 16: the integrations' public faces
    "redis": 16,
    "httpx": 16,
    "otel": 16,
    "prometheus": 16,
}


def _name_of(path: Path, package_dir: Path) -> str:
    """``__init__.py`` -> ``__init__``; ``_core/__init__.py`` -> ``_core``; ``_core/_job.py`` ->
    ``_core._job``."""
    parts = list(path.relative_to(package_dir).with_suffix("").parts)
    if parts[-1] == "__init__" and len(parts) > 1:
        parts.pop()
    return ".".join(parts)


def part_of(module: str) -> str:
    """The part of werkpool a module belongs to: its top-level package or module."""
    return module.split(".")[0]


@functools.cache
def import_graph(package_dir: Path = PACKAGE_DIR) -> dict[str, dict[str, str]]:
    """Map each module of the package to the werkpool modules it imports, and where it does so.

    The result is ``{module: {imported module: "path:line"}}`` for every ``*.py`` below
    *package_dir*, named as in :data:`LAYERS`. Importing ``werkpool._core._job`` counts as
    importing ``_core._job`` only (the package ``__init__`` on the way holds a docstring, checked
    by :func:`test_private_packages_import_nothing`).
    """
    paths = {_name_of(path, package_dir): path for path in sorted(package_dir.rglob("*.py"))}
    graph: dict[str, dict[str, str]] = {}
    for name, path in paths.items():
        is_package = path.name == "__init__.py"
        lines: dict[str, int] = {}
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        for node in ast.walk(tree):
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                for target in _imported_modules(node, name, is_package, paths):
                    if target != name:
                        lines[target] = min(node.lineno, lines.get(target, node.lineno))
        where = path.relative_to(package_dir).as_posix()
        graph[name] = {target: f"{where}:{line}" for target, line in sorted(lines.items())}
    return graph


def _imported_modules(
    node: ast.Import | ast.ImportFrom, name: str, is_package: bool, modules: dict[str, Path]
) -> list[str]:
    """The werkpool modules that *node*, in module *name*, imports."""
    if isinstance(node, ast.Import):
        return [
            _module_of(alias.name, modules)
            for alias in node.names
            if alias.name == PACKAGE or alias.name.startswith(PACKAGE + ".")
        ]
    if node.level == 0:
        absolute = node.module or ""
    else:
        # The package the module sits in, then one level up per extra dot.
        here = [PACKAGE, *([] if name == "__init__" else name.split("."))]
        if not is_package:
            here.pop()
        if node.level - 1 >= len(here):
            raise AssertionError(f"line {node.lineno}: an import above the package")
        base = here[: len(here) - (node.level - 1)]
        absolute = ".".join(base + ([node.module] if node.module else []))
    if not (absolute == PACKAGE or absolute.startswith(PACKAGE + ".")):
        return []
    # `from . import _job` imports a module; `from . import WorkerPool` a name of the package.
    found = []
    for alias in node.names:
        dotted = f"{absolute}.{alias.name}"
        found.append(_module_of(dotted if _known(dotted, modules) else absolute, modules))
    return found


def _known(dotted: str, modules: dict[str, Path]) -> bool:
    return dotted.split(".", 1)[1] in modules if "." in dotted else False


def _module_of(dotted: str, modules: dict[str, Path]) -> str:
    """``werkpool`` -> ``__init__``; ``werkpool._core._job`` (or a name in it) -> ``_core._job``."""
    parts = dotted.split(".")[1:]
    if not parts:
        return "__init__"
    while parts and ".".join(parts) not in modules:
        parts.pop()  # `werkpool._core._job.Job`: a name inside a module
    assert parts, f"{dotted} is not a module of werkpool/"
    return ".".join(parts)


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
    """TYPE_CHECKING, function-level, relative (one dot or two), ``from . import`` and absolute
    imports all count, in modules and in subpackages."""
    sources = {
        "__init__.py": "from ._a import A\n",
        "_a.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from ._b import B\n",
        "_b.py": "def later():\n    from . import _c\n",
        "_c.py": "import werkpool._d\nfrom werkpool import WorkerPool\nimport anyio\n",
        "_d.py": "from . import _c as again, WorkerPool\n",
        "_sub/__init__.py": '"""A docstring."""\n',
        "_sub/_e.py": "from ._f import F\nfrom .._a import A\nfrom werkpool._sub._f import G\n",
        "_sub/_f.py": "from .. import _d\nfrom . import _e\n",
        "ext/__init__.py": "from ._g import G\n",
        "ext/_g.py": "from .._sub import _f\nimport werkpool.ext\n",
    }
    for name, source in sources.items():
        (tmp_path / name).parent.mkdir(exist_ok=True)
        (tmp_path / name).write_text(source, encoding="utf-8")
    graph = import_graph(tmp_path)
    assert graph == {
        "__init__": {"_a": "__init__.py:1"},
        "_a": {"_b": "_a.py:3"},
        "_b": {"_c": "_b.py:2"},
        "_c": {"__init__": "_c.py:2", "_d": "_c.py:1"},
        "_d": {"__init__": "_d.py:1", "_c": "_d.py:1"},
        "_sub": {},
        "_sub._e": {"_a": "_sub/_e.py:2", "_sub._f": "_sub/_e.py:1"},
        "_sub._f": {"_d": "_sub/_f.py:1", "_sub._e": "_sub/_f.py:2"},
        "ext": {"ext._g": "ext/__init__.py:1"},
        "ext._g": {"_sub._f": "ext/_g.py:1", "ext": "ext/_g.py:2"},
    }
    assert _cycles(graph) == [
        ["__init__", "_a", "_b", "_c", "__init__"],
        ["__init__", "_a", "_b", "_c", "_d", "__init__"],
        ["_c", "_d", "_c"],
        ["_sub._e", "_sub._f", "_sub._e"],
        ["ext", "ext._g", "ext"],
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


def test_every_werkpool_module_has_a_layer_and_a_part() -> None:
    """A module on disk that LAYERS does not place fails here: give it a layer first. A module
    LAYERS names that is not on disk fails too (the table is the map of the package)."""
    on_disk = set(import_graph())
    assert not on_disk - set(LAYERS), (
        f"modules missing from LAYERS: {sorted(on_disk - set(LAYERS))}"
    )
    assert not set(LAYERS) - on_disk, f"LAYERS names no module: {sorted(set(LAYERS) - on_disk)}"
    unranked = sorted({part_of(module) for module in LAYERS} - set(PACKAGES))
    assert not unranked, f"parts of werkpool missing from PACKAGES: {unranked}"


def test_werkpool_parts_import_only_their_own_or_lower_ranked_parts() -> None:
    """The core imports nothing from the runtime, the runtime nothing from ``_observe`` or an
    integration, and an integration nothing from another."""
    graph = import_graph()
    crossing = [
        f"  {module} ({part_of(module)}, rank {PACKAGES[part_of(module)]}) imports {imported} "
        f"({part_of(imported)}, rank {PACKAGES[part_of(imported)]}) at {where}"
        for module, imports in sorted(graph.items())
        for imported, where in sorted(imports.items())
        if part_of(imported) != part_of(module)
        and PACKAGES[part_of(imported)] >= PACKAGES[part_of(module)]
    ]
    assert not crossing, "imports that do not go down a rank:\n" + "\n".join(crossing)


def test_private_packages_import_nothing() -> None:
    """``_core``, ``_runtime``, ``_observe`` and ``_facade`` are namespaces with a docstring:
    importing one of their modules runs nothing else of werkpool (the graph relies on it)."""
    graph = import_graph()
    for package in ("_core", "_runtime", "_observe", "_facade"):
        assert graph[package] == {}, f"werkpool/{package}/__init__.py imports {graph[package]}"


def readme_layers(text: str) -> dict[str, int]:
    """The modules of the README's architecture table and their layers: each row reads
    ``| part | layer | `module`, `module` | ... |``."""
    section = text.split("## Architecture", 1)[1].split("\n## ", 1)[0]
    found: dict[str, int] = {}
    for row in re.findall(r"^\|([^\n]*)\|$", section, flags=re.MULTILINE):
        cells = [cell.strip() for cell in row.split("|")]
        if len(cells) < 3 or not cells[1].isdigit():
            continue
        for module in re.findall(r"`([^`]+)`", cells[2]):
            found[module] = int(cells[1])
    return found


def test_the_readme_table_is_the_layer_table() -> None:
    """README.md's architecture table lists every module of :data:`LAYERS`, in its layer."""
    table = readme_layers(README.read_text(encoding="utf-8"))
    assert table == LAYERS, (
        f"README.md's architecture table differs from {__file__}'s LAYERS: "
        f"missing {sorted(set(LAYERS) - set(table))}, extra {sorted(set(table) - set(LAYERS))}, "
        f"other layer {sorted(m for m in set(table) & set(LAYERS) if table[m] != LAYERS[m])}"
    )


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


def test_tests_read_no_pool_lifecycle() -> None:
    """No test reads a pool's lifecycle (``pool._life``): tests go through the public interface
    or through a part's own (a Room, Crew or Scheduler made by the test), so that the lifecycle
    can be reshaped without rewriting them (#23 item 9)."""
    tests = Path(__file__).resolve().parent
    readers = [
        f"  {path.relative_to(tests)}:{number}: {line.strip()}"
        for path in sorted(tests.rglob("*.py"))
        if path.name != Path(__file__).name
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1)
        if re.search(r"\._life\b", line)
    ]
    assert not readers, "tests that read pool._life:\n" + "\n".join(readers)
