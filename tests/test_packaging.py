"""The package is ready to publish: its version, its metadata, its version labels, its sdist.

`python3 -m nox -s package` goes further: it builds the sdist and the wheel, runs
`twine check --strict`, installs the wheel with each extra alone in a fresh venv and runs that
extra's smallest documented example, and runs a subset of the tests from the unpacked sdist.
These tests are the static half, fast and offline.
"""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PYPROJECT = ROOT / "pyproject.toml"
CHANGELOG = ROOT / "CHANGELOG.md"

#: `.. versionadded:: X` and `.. versionchanged:: X`, in a docstring or a `#:` comment.
VERSION_LABEL = re.compile(r"\.\. version(?:added|changed)::[ \t]*(?P<version>\S+)")
#: A released section of the changelog: `## [0.3.0] - 2026-12-01` (not `## [Unreleased]`).
RELEASE_HEADING = re.compile(r"^## \[(?P<version>\d+(?:\.\d+)+)\]", re.M)


def package_version() -> str:
    """The `version` of pyproject's [project] table (read without tomllib, absent on 3.10)."""
    text = PYPROJECT.read_text(encoding="utf-8")
    project = text.split("[project]", 1)[1].split("\n[", 1)[0]
    match = re.search(r'^version\s*=\s*"([^"]+)"', project, flags=re.M)
    assert match, "pyproject.toml's [project] table has no version"
    return match[1]


def release(version: str) -> tuple[int, int, int]:
    """A version's release as three numbers: "0.3.0.dev0" and "0.3" are both (0, 3, 0)."""
    match = re.match(r"\d+(?:\.\d+)*", version)
    assert match, f"not a version: {version!r}"
    numbers = [int(part) for part in match[0].split(".")] + [0, 0]
    return numbers[0], numbers[1], numbers[2]


def version_labels() -> list[tuple[str, str]]:
    """Every version label in the package's sources: (file:line, version)."""
    labels = []
    for path in sorted((ROOT / "werkpool").rglob("*.py")):
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            for match in VERSION_LABEL.finditer(line):
                where = f"{path.relative_to(ROOT).as_posix()}:{number}"
                labels.append((where, match["version"]))
    return labels


def test_version_is_a_release() -> None:
    """The version to publish is a final release, not a development one."""
    version = package_version()
    assert re.fullmatch(r"\d+\.\d+\.\d+", version), f"pyproject's version is {version!r}"


def test_version_labels_name_released_versions() -> None:
    """Each `versionadded`/`versionchanged` names the package's version or a release that the
    changelog has a section for, never a later one."""
    labels = version_labels()
    assert len(labels) > 20, "the version labels were not found"
    current = release(package_version())
    known = [current, *(release(v) for v in RELEASE_HEADING.findall(CHANGELOG.read_text("utf-8")))]
    wrong = [
        f"{where}: {version}"
        for where, version in labels
        if release(version) > current or release(version) not in known
    ]
    assert not wrong, (
        f"version labels beyond {package_version()} or without a section in CHANGELOG.md "
        f"(released: {RELEASE_HEADING.findall(CHANGELOG.read_text('utf-8'))}):\n" + "\n".join(wrong)
    )


def test_the_02_api_is_labelled_02() -> None:
    """What werkpool 0.2 had (the seed's README: `WorkerPool(size, rate)`, `worker_pool`, `run`,
    `shutdown`, `kill`) says it was added in 0.2, and says what 0.3 changed."""
    import werkpool

    for name, obj in [("WorkerPool", werkpool.WorkerPool), ("worker_pool", werkpool.worker_pool)]:
        labels = VERSION_LABEL.findall(obj.__doc__ or "")
        assert labels[:1] == ["0.2"], f"{name}: versionadded {labels[:1]}, expected 0.2"
        assert "0.3" in labels[1:], f"{name} has no versionchanged 0.3"
    for method in ("run", "shutdown", "kill"):
        doc = getattr(werkpool.WorkerPool, method).__doc__ or ""
        assert "versionadded" not in doc, f"WorkerPool.{method} is 0.2 API: no versionadded"


def toml_table(name: str) -> str:
    """The text of one table of pyproject.toml (read without tomllib, absent on 3.10)."""
    text = PYPROJECT.read_text(encoding="utf-8")
    return text.split(f"\n[{name}]\n", 1)[1].split("\n[", 1)[0]


def test_project_urls() -> None:
    """The package index links to the home page, the documentation, the source and the
    changelog."""
    urls = dict(re.findall(r'^(\w+)\s*=\s*"([^"]+)"', toml_table("project.urls"), flags=re.M))
    assert urls["Homepage"] == "https://github.com/werkpool/werkpool"
    assert urls["Documentation"] == "https://werkpool.readthedocs.io"
    assert urls["Source"] == "https://github.com/werkpool/werkpool"
    assert urls["Changelog"] == "https://github.com/werkpool/werkpool/blob/main/CHANGELOG.md"


def test_sdist_ships_what_the_tests_read() -> None:
    """The sdist's own test run is green only if it has the files its tests read: every
    top-level path the tests name, and benchmarks/ (the README links to it and shows its
    picture, and tests/test_readme.py checks those exist)."""
    shipped = set(re.findall(r'"/([^"/]+)"', toml_table("tool.hatch.build.targets.sdist")))
    read = {"benchmarks"}
    for test in (ROOT / "tests").rglob("*.py"):
        text = test.read_text(encoding="utf-8")
        read |= set(re.findall(r'(?:ROOT|README\.parent)\s*/\s*"([^"/]+)', text))
    read -= {"pyproject.toml"}  # every sdist has it
    assert {"examples", "docs", "mkdocs.yml", ".ci"} <= read, read
    assert not read - shipped, f"the tests read what the sdist lacks: {sorted(read - shipped)}"
