"""Developer and CI sessions: ``nox`` runs the default ones (tests, lint, typing)."""

from __future__ import annotations

import ast
import html
import json
import os
import re
import shutil
import sys
import tarfile
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import nox
from nox.command import CommandFailed

if sys.version_info >= (3, 11):
    import tomllib
else:  # nox itself depends on tomli below 3.11
    import tomli as tomllib

# "uv|virtualenv" fallback syntax needs nox >= 2024.3.2.
nox.needs_version = ">=2024.3.2"

# Use uv when it is on PATH, plain virtualenv (shipped with nox) otherwise.
nox.options.default_venv_backend = "uv|virtualenv"
# nox turns this on when $CI is set, so a CI box without, say, python3.13 would fail the
# run. Setting it here outranks nox's default (only an explicit command-line flag wins):
# a missing interpreter is reported as a skipped session instead.
nox.options.error_on_missing_interpreters = False
nox.options.sessions = ["tests", "lint", "typing", "docs"]

PYTHONS = ["3.10", "3.11", "3.12", "3.13"]

PYPROJECT: dict[str, Any] = tomllib.loads(
    (Path(__file__).parent / "pyproject.toml").read_text(encoding="utf-8")
)


def dependency_group(*groups: str) -> tuple[str, ...]:
    """Return the requirements of PEP 735 ``[dependency-groups]`` from pyproject.toml."""
    project = getattr(nox, "project", None)
    if project is not None and hasattr(project, "dependency_groups"):  # nox >= 2025.2.9
        return tuple(project.dependency_groups(PYPROJECT, *groups))

    table: dict[str, list[Any]] = PYPROJECT["dependency-groups"]

    def resolve(group: str) -> list[str]:
        requirements: list[str] = []
        for item in table[group]:
            if isinstance(item, str):
                requirements.append(item)
            else:  # {include-group = "..."}
                requirements.extend(resolve(item["include-group"]))
        return requirements

    return tuple(req for group in groups for req in resolve(group))


def _newest_python() -> str | None:
    """The newest of :data:`PYTHONS` on this machine: the one that also runs the tests whose
    outcome does not depend on the interpreter's version (see :func:`tests`)."""
    return next((v for v in reversed(PYTHONS) if shutil.which(f"python{v}")), None)


#: Runs the real-clock, real-process and million-job tests (see :func:`tests`).
MAIN_PYTHON = _newest_python()


@nox.session(python=PYTHONS)
def tests(session: nox.Session) -> None:
    """Run the test suite; pass pytest options after ``--``, e.g. ``-- -m 'not slow'``.

    Without options, on every interpreter: the virtual-time tests on two processes
    (pytest-xdist: they only compute), the million-job scale tests (``slow``) left out and the
    state-machine programs at a fifth of their examples (the ``versions`` Hypothesis profile).
    On the newest interpreter found (:data:`MAIN_PYTHON`) the ``slow`` tests too and the full
    ``ci`` profile, and then the real-clock and timing-sensitive tests (``realclock``,
    ``serial``: real servers, subprocesses, a terminal) alone, so that nothing competes with
    their timing. Those measure the clock, the servers and the memory, and the programs check
    one state machine, not the interpreter's version: running them in full once keeps CI within
    its time (four interpreters on two cores).
    """
    session.install(".", *dependency_group("test"))
    if session.posargs:
        session.run("pytest", *session.posargs)
        return
    main = session.python == MAIN_PYTHON
    first = "not realclock and not serial" + ("" if main else " and not slow")
    if not main and "WERKPOOL_HYPOTHESIS_PROFILE" not in os.environ:
        # The state-machine programs at a fifth of their examples (test_stateful.py).
        session.env["WERKPOOL_HYPOTHESIS_PROFILE"] = "versions"
    session.run("pytest", "-n", "2", "-m", first)
    if main:
        session.run("pytest", "-m", "realclock or serial")


@nox.session
def tests_slow(session: nox.Session) -> None:
    """Run only the long-running scale tests (``@pytest.mark.slow``)."""
    session.install(".", *dependency_group("test"))
    session.run("pytest", "-m", "slow", *session.posargs)


@nox.session
def lint(session: nox.Session) -> None:
    """Check lint and formatting with ruff."""
    session.install(*dependency_group("lint"))
    session.run("ruff", "check", ".")
    session.run("ruff", "format", "--check", ".")


@nox.session
def typing(session: nox.Session) -> None:
    """Type-check the package and the user-side API checks in tests/typing/ with mypy."""
    session.install(".", *dependency_group("typing"))
    session.run("mypy", "--strict", "werkpool", "tests/typing")


@nox.session
def docs(session: nox.Session) -> None:
    """Build the documentation site into site/ with ``mkdocs build --strict`` (mkdocs.yml).

    It needs nothing from the network but the packages: no external inventories, no plugin that
    fetches at build time. Pass mkdocs options after ``--``, e.g. ``-- --site-dir /tmp/site``.
    """
    session.install(*dependency_group("docs"))
    # Material for MkDocs prints a notice about MkDocs 2.0 on every build; the build is pinned
    # to MkDocs 1.x (pyproject's docs group), so it is noise here.
    session.run("mkdocs", "build", "--strict", *session.posargs, env={"NO_MKDOCS_2_WARNING": "1"})
    problems = check_site(_site_dir(session.posargs))
    if problems:
        session.error("the built site has problems:\n" + "\n".join(problems))


#: The code column of the documentation site holds about 88 characters (ruff's line length on
#: examples/; the pages and the README keep to it, tests/test_docs.py checks their sources).
CODE_WIDTH = 88


def _site_dir(posargs: list[str]) -> Path:
    """The directory ``mkdocs build`` wrote to: its ``-d``/``--site-dir``, or mkdocs.yml's."""
    for i, arg in enumerate(posargs):
        if arg in ("-d", "--site-dir") and i + 1 < len(posargs):
            return Path(posargs[i + 1])
        if arg.startswith("--site-dir="):
            return Path(arg.partition("=")[2])
    return Path(__file__).parent / "site"


def _site_path() -> str:
    """The path part of the site's address (mkdocs.yml's ``site_url``, which Read the Docs
    overrides with READTHEDOCS_CANONICAL_URL), ending with a slash."""
    config = (Path(__file__).parent / "mkdocs.yml").read_text(encoding="utf-8")
    default = re.search(r'^site_url:.*?"(https?://[^"]+)"', config, flags=re.M)
    url = os.environ.get("READTHEDOCS_CANONICAL_URL") or (default[1] if default else "/")
    return urlsplit(url).path.rstrip("/") + "/"


def check_site(site: Path) -> list[str]:
    """What the built site would get wrong in a browser, which ``--strict`` lets through:

    - a code line wider than the code column (the browser cuts it off), docstrings included;
    - a link of 404.html outside the site's own path: that page is served at any missing
      address, so its links are absolute, and must start with the path the site is served at.
    """
    problems = []
    for page in sorted(site.rglob("*.html")):
        text = page.read_text(encoding="utf-8")
        for block in re.findall(r"<pre\b[^>]*>(.*?)</pre>", text, flags=re.S):
            code = html.unescape(re.sub(r"<[^>]+>", "", block))
            problems += [
                f"{page.relative_to(site)}: a code line of {len(line)} columns: {line.strip()}"
                for line in code.splitlines()
                if len(line) > CODE_WIDTH
            ]
    not_found = site / "404.html"
    if not not_found.is_file():
        return [*problems, "no 404.html"]
    base = _site_path()
    for link in re.findall(r'(?:href|src)="([^"]*)"', not_found.read_text(encoding="utf-8")):
        if not re.match(r"^(?:[a-z][a-z0-9+.-]*:|#)", link) and not link.startswith(base):
            problems.append(f"404.html: {link} is not under the site's path {base}")
    return problems


#: Each extra ("" for the core alone) and what an example must use to show it.
EXTRAS = {
    "": r"\bwerkpool\b",
    "trio": r"^\s*import trio\b",
    "redis": r"\bwerkpool\.redis\b",
    "httpx": r"\bwerkpool\.httpx\b",
    "otel": r"\bwerkpool\.otel\b",
    "prometheus": r"\bwerkpool\.prometheus\b",
    "progress": r"\bwerkpool\.progress\(",
}

#: The tests `nox -s package` runs from the unpacked sdist by default (pass others after
#: ``--``, e.g. ``-- tests`` for all of them): those that read the repository's files, which
#: an sdist that lacked them would fail, and a quick look at the pool itself.
SDIST_TESTS = (
    "tests/test_packaging.py",
    "tests/test_docs.py",
    "tests/test_readme.py",
    "tests/test_architecture.py",
    "tests/test_public_api.py",
    "tests/test_examples.py",
    "tests/test_examples_structured.py",
    "tests/test_example_main_job.py",
    "tests/test_example_api_limits.py",
    "tests/test_pool.py",
)


def documented_examples() -> list[tuple[str, str]]:
    """Every example the documentation shows as runnable: the ```python blocks of README.md
    and docs/ (the ```py ones are shown, not run) and the files of examples/, as (name, code)."""
    root = Path(__file__).parent
    fence = re.compile(
        r"^(?P<indent>[ \t]*)```python[ \t]*\n(?P<body>.*?)^(?P=indent)```[ \t]*$", re.M | re.S
    )
    found = []
    for page in [root / "README.md", *sorted((root / "docs").rglob("*.md"))]:
        for i, match in enumerate(fence.finditer(page.read_text(encoding="utf-8"))):
            indent = len(match["indent"])
            code = "".join(line[indent:] for line in match["body"].splitlines(keepends=True))
            if "--8<--" not in code:  # a snippet: the file itself is among the examples
                found.append((f"{page.relative_to(root).as_posix()} block {i}", code))
    found += [
        (file.relative_to(root).as_posix(), file.read_text(encoding="utf-8"))
        for file in sorted((root / "examples").glob("*.py"))
    ]
    return found


def imported_modules(code: str) -> set[str]:
    """The absolute imports of some code, wherever they are (a function's lazy ones too)."""
    modules = set()
    for node in ast.walk(ast.parse(code)):
        if isinstance(node, ast.Import):
            modules.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            modules.add(node.module)
    return modules


def _smallest_example(session: nox.Session, python: Path, extra: str) -> tuple[str, str] | None:
    """The shortest documented example that uses *extra* and whose imports the venv of
    *python* (werkpool with that extra alone) has."""
    candidates = [
        (name, code)
        for name, code in documented_examples()
        if re.search(EXTRAS[extra], code, flags=re.M)
    ]
    modules = sorted(set().union(*(imported_modules(code) for _, code in candidates)))
    probe = (
        "import importlib.util, json, sys\n"
        "def found(name):\n"
        "    try:\n"
        "        return importlib.util.find_spec(name) is not None\n"
        "    except ImportError:\n"
        "        return False\n"
        "print(json.dumps({name: found(name) for name in json.loads(sys.argv[1])}))\n"
    )
    output = session.run(str(python), "-c", probe, json.dumps(modules), external=True, silent=True)
    available = json.loads(str(output).strip().splitlines()[-1])
    runnable = [
        (name, code)
        for name, code in candidates
        if all(available[module] for module in imported_modules(code))
    ]
    return min(runnable, key=lambda c: len(c[1].strip().splitlines()), default=None)


@nox.session(python=["3.10", "3.13"])
def package(session: nox.Session) -> None:
    """Build the sdist and the wheel and check them as the package index will; install the
    wheel with each extra alone in a fresh venv and run that extra's smallest documented
    example there (offline: the examples bring their own servers); run tests from the
    unpacked sdist (pass pytest arguments after ``--`` to choose others). On the oldest and
    the newest supported Python (a missing one is skipped, as for the tests)."""
    session.install("build", "twine", "readme_renderer[md]")
    tmp = Path(session.create_tmp()).resolve()
    dist = tmp / "dist"
    shutil.rmtree(dist, ignore_errors=True)
    session.run("python", "-m", "build", "--outdir", str(dist), ".")
    (sdist,) = dist.glob("werkpool-*.tar.gz")
    (wheel,) = dist.glob("werkpool-*.whl")
    session.run("twine", "check", "--strict", str(sdist), str(wheel))

    uv = shutil.which("uv")
    # The session's own interpreter, the base of each venv below.
    base = str(session.run("python", "-c", "import sys; print(sys.executable)", silent=True))
    base = base.strip()
    missing = []  # extras without a documented example they can run: reported at the end
    for extra in EXTRAS:
        label = f"werkpool[{extra}]" if extra else "werkpool"
        venv = tmp / f"venv-{extra or 'core'}"
        shutil.rmtree(venv, ignore_errors=True)
        python = venv / ("Scripts/python.exe" if sys.platform == "win32" else "bin/python")
        requirement = f"werkpool[{extra}] @ {wheel.as_uri()}" if extra else str(wheel)
        if uv:  # 14 fresh venvs: uv makes and fills one in about a second, pip in ten or more
            session.run(uv, "venv", "-q", "--python", base, str(venv), external=True)
            session.run(
                uv, "pip", "install", "-q", "--python", str(python), requirement, external=True
            )
        else:
            session.run("python", "-m", "venv", str(venv))
            session.run(str(python), "-m", "pip", "install", "-q", requirement, external=True)
        example = _smallest_example(session, python, extra)
        if example is None:
            session.warn(f"no documented example of {label} runs with it alone")
            missing.append(label)
            continue
        name, code = example
        if "redis-server" in code and not shutil.which("redis-server"):
            if os.environ.get("CI"):
                session.error(f"{name} needs redis-server, which CI must have")
            session.warn(f"skipping {name} for {label}: no redis-server on PATH")
            continue
        script = venv / "example.py"
        script.write_text(code, encoding="utf-8")
        session.log(f"{label} alone runs {name}")
        # From the venv's directory, so that nothing of the checkout is importable.
        with session.chdir(venv):
            session.run(str(python), str(script), external=True)

    # The sdist's own tests, against the wheel, from the unpacked sdist.
    shutil.rmtree(tmp / "sdist", ignore_errors=True)
    with tarfile.open(sdist) as archive:
        if sys.version_info >= (3, 12):
            archive.extractall(tmp / "sdist", filter="data")
        else:  # our own archive, just built
            archive.extractall(tmp / "sdist")
    (unpacked,) = (tmp / "sdist").iterdir()
    session.install(str(wheel), *dependency_group("test"))
    with session.chdir(unpacked):
        session.run("pytest", "-p", "no:cacheprovider", *(session.posargs or SDIST_TESTS))
    if missing:
        session.error(
            "no documented example runs with the extra alone (one that needs more, such as an "
            f"SDK, does not count): {', '.join(missing)}"
        )


@nox.session
def pyright(session: nox.Session) -> None:
    """Type-check the same files with pyright in strict mode (pyproject's [tool.pyright])."""
    session.install(".", *dependency_group("pyright"))
    session.run("pyright")


def _ensure_nginx(session: nox.Session) -> None:
    """Install nginx with apt for the server-limit benchmark when it is missing and we may.

    Only as root on a machine with apt-get; anywhere else (or when apt fails) the benchmark
    skips that scenario and says so.
    """
    if shutil.which("nginx") or Path("/usr/sbin/nginx").exists():
        return
    if not hasattr(os, "geteuid") or os.geteuid() != 0 or not shutil.which("apt-get"):
        session.warn("nginx is missing and cannot be installed here (root and apt-get needed)")
        return
    env = {"DEBIAN_FRONTEND": "noninteractive"}
    try:
        session.run("apt-get", "update", external=True, env=env)
        session.run("apt-get", "install", "-y", "nginx", external=True, env=env)
    except CommandFailed:
        session.warn("apt-get could not install nginx: the server-limit scenario will be skipped")


def _ensure_redis(session: nox.Session) -> None:
    """Install redis-server with apt for the shared-limits benchmark when it is missing and we
    may (root and apt-get); anywhere else it skips that scenario and says so."""
    if shutil.which("redis-server") or shutil.which("valkey-server"):
        return
    if not hasattr(os, "geteuid") or os.geteuid() != 0 or not shutil.which("apt-get"):
        session.warn("redis-server is missing and cannot be installed here (root and apt-get)")
        return
    env = {"DEBIAN_FRONTEND": "noninteractive"}
    try:
        session.run("apt-get", "update", external=True, env=env)
        session.run("apt-get", "install", "-y", "redis-server", external=True, env=env)
    except CommandFailed:
        session.warn("apt-get could not install redis-server: the Redis scenario will be skipped")


@nox.session
def bench(session: nox.Session) -> None:
    """Run the benchmarks (benchmarks/README.md); ``-- --quick`` for a short run.

    ``-- --ab REF [--cases ...] [--repeats N]`` runs the A/B of the per-job overhead against
    the git ref REF instead (benchmarks/ab.py): both trees side by side, in one run.
    """
    session.install(".", *dependency_group("bench"))
    if "--ab" in session.posargs:
        at = session.posargs.index("--ab")
        rest = [*session.posargs[:at], *session.posargs[at + 2 :]]
        session.run("python", "-m", "benchmarks.ab", "--ref", session.posargs[at + 1], *rest)
        return
    only = "--only" in session.posargs
    if not only or "server" in session.posargs:
        _ensure_nginx(session)
    command = "python3 -m nox -s bench"  # recorded on top of the results table
    if session.posargs:
        command += " -- " + " ".join(session.posargs)
    session.run(
        "python",
        "-m",
        "benchmarks.run",
        *session.posargs,
        env={"WERKPOOL_BENCH_COMMAND": command},
    )
    if only:
        return  # scenario 10 alone: python -m benchmarks.shared_redis
    # Scenario 10 (shared limits in Redis) runs worker processes and its own redis-server.
    _ensure_redis(session)
    args = [arg for arg in ("--quick", "--no-readme") if arg in session.posargs]
    for i, arg in enumerate(session.posargs):
        if arg == "--out" and i + 1 < len(session.posargs):
            args += ["--out", session.posargs[i + 1]]
        elif arg.startswith("--out="):
            args.append(arg)
    session.run(
        "python",
        "-m",
        "benchmarks.shared_redis",
        *args,
        env={"WERKPOOL_BENCH_COMMAND": command},
    )


@nox.session
def tests_nightly(session: nox.Session) -> None:
    """Run the contract suite with the long Hypothesis profile and the 10^6-job scale tests."""
    session.install(".", *dependency_group("test"))
    session.env["WERKPOOL_HYPOTHESIS_PROFILE"] = "nightly"
    session.run("pytest", "tests/contract", "-m", "slow or not slow", *session.posargs)
