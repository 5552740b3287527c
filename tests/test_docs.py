"""The documentation site (docs/, mkdocs.yml) holds together, without mkdocs installed.

`python3 -m nox -s docs` builds the site with `mkdocs build --strict`; these tests catch the
usual breakages fast: a page missing from the nav or the nav naming a missing page, a snippet
(`--8<--`) whose file moved, a relative link or anchor that leads nowhere, a public name missing
from the API reference, and a Python block that no longer runs (each runs on virtual time, as
the README's do).
"""

from __future__ import annotations

import ast
import asyncio
import random
import re
import unicodedata
from pathlib import Path
from typing import Any

import pytest
from support import run_on_virtual_time

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
MKDOCS = ROOT / "mkdocs.yml"

FENCE = re.compile(
    r"^(?P<indent>[ \t]*)(?P<fence>```+|~~~+)(?P<info>[^\n]*)\n"
    r"(?P<body>.*?)^(?P=indent)(?P=fence)[ \t]*$",
    re.M | re.S,
)
SNIPPET = re.compile(
    r"""^[ \t]*-+8<-+[ \t]+(?P<quote>["']?)(?P<path>[^"'\n]+?)(?P=quote)[ \t]*$""", re.M
)
LINK = re.compile(r"!?\[(?:[^\]\[]|\[[^\]]*\])*\]\((?P<target><[^>]*>|[^)\s]+)(?:\s+\"[^\"]*\")?\)")
HEADING = re.compile(r"^(#{1,6})[ \t]+(?P<text>.+?)[ \t]*#*[ \t]*$", re.M)


def nav_pages() -> list[str]:
    """The pages the nav of mkdocs.yml lists, in order (read without a YAML parser)."""
    lines = MKDOCS.read_text(encoding="utf-8").splitlines()
    start = lines.index("nav:")
    pages = []
    for line in lines[start + 1 :]:
        if line.strip() and not line[0].isspace():
            break  # the next top-level key
        pages += re.findall(r"(?:^|[\s:])([\w./-]+\.md)\s*$", line)
    return pages


def doc_pages() -> list[Path]:
    return sorted(DOCS.rglob("*.md"))


def page_id(path: Path) -> str:
    return path.relative_to(DOCS).as_posix()


def without_code(text: str) -> str:
    """The Markdown with its fenced blocks and inline code blanked out."""
    text = FENCE.sub(lambda m: "\n" * m[0].count("\n"), text)
    return re.sub(r"`+[^`\n]*`+", "``", text)


def slugify(heading: str) -> str:
    """The anchor Python-Markdown's toc extension gives a heading (its default slugify)."""
    custom = re.search(r"\{[^}]*#([\w-]+)[^}]*\}\s*$", heading)
    if custom:
        return custom[1]
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # a link: its text
    text = text.replace("`", "")
    text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode("ascii")
    text = re.sub(r"[^\w\s-]", "", text).strip().lower()
    return re.sub(r"[-\s]+", "-", text)


def anchors(path: Path) -> set[str]:
    text = FENCE.sub("", path.read_text(encoding="utf-8"))
    seen: dict[str, int] = {}
    found = set()
    for match in HEADING.finditer(text):
        slug = slugify(match["text"])
        if slug in seen:  # toc numbers repeated headings: slug, slug_1, slug_2
            seen[slug] += 1
            found.add(f"{slug}_{seen[slug]}")
        else:
            seen[slug] = 0
            found.add(slug)
    return found


def test_nav_lists_existing_pages() -> None:
    """Every page the nav names exists, once."""
    pages = nav_pages()
    assert pages, "no pages found in the nav of mkdocs.yml"
    assert len(pages) == len(set(pages)), "a page is listed twice in the nav"
    missing = [page for page in pages if not (DOCS / page).is_file()]
    assert not missing, f"pages in mkdocs.yml's nav but not in docs/: {missing}"


def test_every_page_is_in_the_nav() -> None:
    """No page under docs/ is left out of the nav (mkdocs --strict would warn)."""
    listed = set(nav_pages())
    omitted = [page_id(path) for path in doc_pages() if page_id(path) not in listed]
    assert not omitted, f"pages in docs/ missing from mkdocs.yml's nav: {omitted}"


def snippet_paths() -> list[tuple[str, str]]:
    return [
        (page_id(path), match["path"].strip())
        for path in doc_pages()
        for match in SNIPPET.finditer(path.read_text(encoding="utf-8"))
    ]


def test_snippets_exist() -> None:
    """Every `--8<--` include names a file of the repository (paths from its root)."""
    snippets = snippet_paths()
    assert snippets, "no snippets found: the recipes include the examples"
    missing = []
    for page, target in snippets:
        file = target
        if not (ROOT / file).is_file():  # "file:start:end" or "file:section"
            file = re.sub(r"(:[^:/\\]*){1,2}$", "", target)
        if not (ROOT / file).is_file():
            missing.append(f"{page}: {target}")
    assert not missing, f"snippets whose file is missing: {missing}"


def test_relative_links_resolve() -> None:
    """Every relative link and image leads to a page or file in docs/, and to a heading there."""
    broken = []
    for path in doc_pages():
        for match in LINK.finditer(without_code(path.read_text(encoding="utf-8"))):
            target = match["target"].strip("<>")
            if re.match(r"^[a-z][a-z0-9+.-]*:", target) or target.startswith("/"):
                continue  # a URL (https:, mailto:) or an absolute path, not a page
            file, _, anchor = target.partition("#")
            dest = (path.parent / file).resolve() if file else path
            if not dest.is_file():
                broken.append(f"{page_id(path)}: {target} (no such file)")
            elif (
                anchor
                and dest.suffix == ".md"
                # The API reference's anchors come from mkdocstrings; the build checks them.
                and not page_id(dest).startswith("reference/")
                and anchor not in anchors(dest)
            ):
                broken.append(f"{page_id(path)}: {target} (no such heading)")
    assert not broken, "broken links:\n" + "\n".join(broken)


def public_names(module: str) -> list[str]:
    """A module's ``__all__``, read from its source (the optional dependencies need not be
    installed)."""
    file = ROOT / Path(*module.split("."))
    file = file / "__init__.py" if file.is_dir() else file.with_suffix(".py")
    for node in ast.parse(file.read_text(encoding="utf-8")).body:
        targets = node.targets if isinstance(node, ast.Assign) else []
        if any(isinstance(t, ast.Name) and t.id == "__all__" for t in targets):
            return list(ast.literal_eval(node.value))  # type: ignore[union-attr]
    raise AssertionError(f"{module} has no __all__")


#: The package and its public submodules (werkpool/*.py without a leading underscore).
PUBLIC_MODULES = [
    "werkpool",
    *sorted(f"werkpool.{p.stem}" for p in (ROOT / "werkpool").glob("*.py") if p.name[0] != "_"),
]


@pytest.mark.parametrize("module", PUBLIC_MODULES)
def test_api_reference_is_complete(module: str) -> None:
    """Each public name has its `::: module.Name` entry in docs/reference/."""
    reference = "".join(p.read_text(encoding="utf-8") for p in (DOCS / "reference").glob("*.md"))
    documented = set(re.findall(r"^:::[ \t]+([\w.]+)", reference, flags=re.M))
    missing = [name for name in public_names(module) if f"{module}.{name}" not in documented]
    assert not missing, (
        f"public names of {module} missing from the API reference (add '::: {module}.NAME' "
        f"to a page of docs/reference/): {missing}"
    )


REAL_TIME = "<!-- test: real time -->"


def python_blocks() -> list[tuple[str, str, bool]]:
    """The ```python blocks of the pages: (name, code, whether it must run on the real clock).

    ```py blocks are shown, not run (they need a server or another library), and neither are
    those that include a file (the examples have their own tests). A block that blocks threads
    on a timeout runs on the real clock: mark it with ``<!-- test: real time -->`` above it.
    """
    blocks = []
    for path in doc_pages():
        text = path.read_text(encoding="utf-8")
        for i, match in enumerate(FENCE.finditer(text)):
            info = match["info"].strip().split()
            if info[:1] != ["python"] or "--8<--" in match["body"]:
                continue
            indent = len(match["indent"])
            body = "".join(line[indent:] for line in match["body"].splitlines(keepends=True))
            before = text[: match.start()].rstrip().rsplit("\n", 1)[-1].strip()
            blocks.append((f"{page_id(path)}:{i}", body, before == REAL_TIME))
    return blocks


BLOCKS = python_blocks()


@pytest.mark.parametrize(
    ("code", "real_time"),
    [(code, real_time) for _, code, real_time in BLOCKS],
    ids=[name for name, _, _ in BLOCKS],
)
def test_python_block_runs(
    code: str, real_time: bool, monkeypatch: pytest.MonkeyPatch, capsys: Any
) -> None:
    """The page's Python block runs to completion and prints what it promises."""
    if not real_time:
        monkeypatch.setattr(asyncio, "run", run_on_virtual_time)
    if "import trio" in code and not real_time:
        import trio
        import trio.testing

        real_run = trio.run
        monkeypatch.setattr(
            trio,
            "run",
            lambda fn, *args: real_run(
                fn, *args, clock=trio.testing.MockClock(autojump_threshold=0)
            ),
        )
    random.seed(1234)
    exec(compile(code, "<docs>", "exec"), {"__name__": "__main__"})
    out = capsys.readouterr().out
    if "print(" in code:
        assert out.strip(), "the example printed nothing"
    assert "Traceback" not in out


#: The documentation site's code column holds about 88 characters: a wider line is cut off.
CODE_WIDTH = 88


def test_code_fits_the_column() -> None:
    """No code line wider than the column: the pages' code blocks, the files they include in
    code blocks, and examples/ (`nox -s docs` also checks the built site, docstrings included)."""
    wide = []
    included = set()
    for path in doc_pages():
        text = path.read_text(encoding="utf-8")
        for match in FENCE.finditer(text):
            indent = len(match["indent"])
            for line in match["body"].splitlines():
                snippet = SNIPPET.match(line)
                if snippet:
                    included.add(re.sub(r"(:[^:/\\]*){1,2}$", "", snippet["path"].strip()))
                elif len(line) - indent > CODE_WIDTH:
                    wide.append(f"{page_id(path)}: {line.strip()}")
    files = included | {p.relative_to(ROOT).as_posix() for p in (ROOT / "examples").glob("*.py")}
    assert "examples/main_job.py" in files
    for name in sorted(files):
        for number, line in enumerate((ROOT / name).read_text(encoding="utf-8").splitlines(), 1):
            if len(line) > CODE_WIDTH:
                wide.append(f"{name}:{number}: {line.strip()}")
    assert not wide, f"code lines over {CODE_WIDTH} columns:\n" + "\n".join(wide)


def test_extras_are_quoted() -> None:
    """`pip install "werkpool[redis]"`, quoted everywhere: zsh expands unquoted brackets."""
    files = [ROOT / "README.md", *doc_pages(), *(ROOT / "werkpool").glob("*.py")]
    files += (ROOT / "examples").glob("*.py")
    unquoted = [
        f"{path.relative_to(ROOT).as_posix()}: {match[0]}"
        for path in files
        for match in re.finditer(
            r"pip install [^\s`\"']*werkpool\[[^\]]*\]", path.read_text("utf-8")
        )
    ]
    assert not unquoted, "unquoted extras:\n" + "\n".join(unquoted)


@pytest.mark.parametrize("page", sorted((DOCS / "reference").glob("*.md")), ids=page_id)
def test_reference_page_says_its_intro_once(page: Path) -> None:
    """A reference page opens with its module's docstring, which says what the module is:
    prose of the page's own above it would say it twice (each extra's page did)."""
    text = page.read_text(encoding="utf-8")
    first = re.search(r"^:::[ \t]+(werkpool(?:\.\w+)?)[ \t]*\n[ \t]+options:", text, flags=re.M)
    assert first, f"{page_id(page)} does not show its module's docstring"
    above = HEADING.sub("", text[: first.start()]).strip()
    assert not above, f"{page_id(page)} says before its module's docstring: {above!r}"


def mkdocs_setting(name: str) -> str:
    """A top-level setting of mkdocs.yml, as written (read without a YAML parser)."""
    match = re.search(rf"^{name}:[ \t]*(.*)$", MKDOCS.read_text(encoding="utf-8"), flags=re.M)
    assert match, f"mkdocs.yml does not set {name}"
    return match[1].strip()


def test_site_knows_its_address_and_its_source() -> None:
    """`site_url` has the path the site is served at (404.html links from it: the host's root
    would break it under Read the Docs' /en/latest/); `repo_url` links to the source; and
    attributes show their docstrings, not the code that sets them."""
    site_url = re.search(r"https://[^\s\"\]]+", mkdocs_setting("site_url"))
    assert site_url, "site_url names no address"
    assert re.fullmatch(r"https://werkpool\.readthedocs\.io/en/latest/", site_url[0])
    assert "READTHEDOCS_CANONICAL_URL" in mkdocs_setting("site_url")
    assert mkdocs_setting("repo_url") == "https://github.com/werkpool/werkpool"
    assert re.search(r"^ +show_attribute_values: false$", MKDOCS.read_text("utf-8"), re.M)
