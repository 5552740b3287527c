"""Developer and CI sessions: ``nox`` runs the default ones (tests, lint, typing)."""

from __future__ import annotations

import html
import os
import re
import shutil
import sys
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


@nox.session(python=PYTHONS)
def tests(session: nox.Session) -> None:
    """Run the test suite; pass pytest options after ``--``, e.g. ``-- -m 'not slow'``."""
    session.install(".", *dependency_group("test"))
    session.run("pytest", *session.posargs)


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
    """Run the benchmarks (benchmarks/README.md); ``-- --quick`` for a short run."""
    session.install(".", *dependency_group("bench"))
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
