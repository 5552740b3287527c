"""A griffe extension for the API reference: werkpool's reST docstrings, rendered as Markdown.

werkpool's docstrings follow anyio's style (STYLE.md L24): Sphinx field lists (``:param x:``),
Sphinx roles (``:class:`Rate```), ``.. versionadded::`` and reST literal blocks (``::``).
mkdocstrings' sphinx parser reads the field lists but renders the rest as Markdown, so this
extension rewrites each docstring of the package before it is parsed:

- roles become cross-references to the objects of the API reference (``:meth:`run``` in
  ``WorkerPool`` links to ``werkpool.WorkerPool.run``), or plain code where the target is not
  documented here (``anyio.current_time``: the build fetches no other project's inventory);
- the field lists move to the end, since griffe's parser takes every line after a field, up to
  the next line that starts with a colon, as part of that field (werkpool's class docstrings
  put their prose after the parameters);
- ``.. versionadded:: X`` and ``.. versionchanged:: X`` become a line "Added in version X.";
- a paragraph ending in ``::`` and its indented block become a fenced Python block;
- `` `text <url>`_ `` links become Markdown links, and ``:pep:`N``` a link to the PEP;
- attributes documented by ``#:`` comments above them (Sphinx autodoc's convention, which
  griffe does not read) get those comments as their docstrings.

It is loaded by mkdocs.yml (``extensions: [docs/griffe_rest.py]``) and is not part of the site.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import griffe

ROLE = re.compile(r":(class|meth|func|exc|attr|data|obj|mod|const|pep):`([^`]+)`")
FIELD = re.compile(
    r"^:(param|parameter|arg|argument|key|keyword|type|raises|raise|except|exception|var|ivar"
    r"|cvar|vartype|returns|return|rtype|yields|yield)\b[^:]*:"
)
VERSION = re.compile(r"^\.\. version(added|changed)::\s*(\S+)\s*(.*)$")
LINK = re.compile(r"`([^`<]+?)\s*<(https?://[^>]+)>`__?")


class RestToMarkdown(griffe.Extension):
    """Rewrite the reST of werkpool's docstrings once the whole package is loaded."""

    def on_package(self, *, pkg: griffe.Module, **kwargs: Any) -> None:  # griffe >= 2
        if pkg.path == "werkpool":
            loader = kwargs.get("loader")
            _rewrite_package(pkg, getattr(loader, "docstring_parser", None))

    def on_package_loaded(self, *, pkg: griffe.Module, **kwargs: Any) -> None:  # griffe 1
        self.on_package(pkg=pkg, **kwargs)


def _rewrite_package(pkg: griffe.Module, parser: Any) -> None:
    # The package and its public submodules (werkpool.redis, werkpool.httpx, ...).
    modules = [pkg] + [
        member
        for name, member in pkg.members.items()
        if not member.is_alias and member.is_module and not name.startswith("_")
    ]
    faces = _inline_faces(modules)
    public = _public_paths(modules)
    module_paths = [module.path for module in modules]
    done: set[int] = set()
    for obj in _walk(pkg):
        if id(obj) in done:
            continue
        done.add(id(obj))
        if obj.docstring is None and obj.is_attribute:
            _docstring_from_comments(obj, parser)
        if obj.is_function:
            for signature in (obj, *(obj.overloads or ())):
                _expand_options(signature, overload=signature is not obj)
        if obj.docstring is not None:
            # A face's roles are read in the class it is a face of (:meth:`run` in ControlFace).
            scopes = [*_scopes(obj), *(faces[s] for s in _scopes(obj) if s in faces), *module_paths]
            obj.docstring.value = rewrite(obj.docstring.value, scopes, public)


def _expand_options(func: Any, *, overload: bool = False) -> None:
    """``**options: Unpack[SubmitOptions]``: list the TypedDict's keys as keyword-only parameters,
    with their annotations and their defaults (those of ``job_options`` in the TypedDict's module),
    so that the signature shows them and each ``:param:`` finds its parameter (an *overload*
    shows ``...`` as its other defaults)."""
    params = func.parameters
    last = params[-1] if len(params) else None
    if last is None or last.kind is not griffe.ParameterKind.var_keyword:
        return
    unpack = last.annotation
    if not isinstance(unpack, griffe.ExprSubscript) or str(unpack.left) != "Unpack":
        return
    target = unpack.slice.left if isinstance(unpack.slice, griffe.ExprSubscript) else unpack.slice
    path = getattr(target, "canonical_path", None)
    try:
        typed_dict = func.modules_collection[path]
        defaults = typed_dict.module.members["job_options"].parameters
    except (KeyError, TypeError, AttributeError):
        return
    del params[last.name]
    for cls in reversed([typed_dict, *typed_dict.mro()]):  # the bases' keys first
        for name, member in cls.members.items():
            if member.is_attribute and name not in params:
                kind = griffe.ParameterKind.keyword_only
                option = griffe.Parameter(name, annotation=member.annotation, kind=kind)
                default = defaults[name].default if name in defaults else None
                option.default = "..." if overload else default
                option.function = func
                params.add(option)


def _inline_faces(modules: list[griffe.Module]) -> dict[str, str]:
    """A public class composed of private mixins (``WorkerPool`` of its faces in
    ``werkpool/_facade/``) documents their public members as its own, base after base in the
    order the class lists them, before its own members: the reference shows one class, as users
    see it. Returns each face's path mapped to the class's.
    """
    faces: dict[str, str] = {}
    for module in modules:
        for member in list(module.members.values()):
            try:
                cls = member.final_target if member.is_alias else member
            except (griffe.AliasResolutionError, griffe.CyclicAliasError):
                continue
            if not cls.is_class or cls.path.startswith("werkpool._facade."):
                continue
            inlined: dict[str, griffe.Object | griffe.Alias] = {}
            for base in cls.resolved_bases:
                if not base.path.startswith("werkpool._facade."):
                    continue
                faces[base.path] = cls.path
                for name, inherited in base.members.items():
                    if not name.startswith("_") and name not in cls.members:
                        inlined[name] = griffe.Alias(name, inherited, parent=cls)
            if inlined:
                # The page reads the class through its alias (werkpool.WorkerPool), whose members
                # have no line of their own: "source" order is this dict's order.
                own = dict(cls.members)
                cls.members.clear()
                cls.members.update(inlined)
                cls.members.update(own)
                cls.bases.clear()  # the faces are private: "Bases: ControlFace, ..." would leak
    return faces


def _walk(obj: griffe.Object) -> Any:
    """Every object defined in the package (aliases are skipped: their targets are visited)."""
    yield obj
    for member in list(obj.members.values()):
        if member.is_alias:
            continue
        yield from _walk(member)


def _public_paths(modules: list[griffe.Module]) -> dict[str, str]:
    """Map each documented object's path, and the path where it is defined, to its public path.

    ``werkpool._pool.WorkerPool.run`` and ``werkpool.WorkerPool.run`` both map to the latter,
    the identifier of its entry in the API reference.
    """
    paths: dict[str, str] = {}

    def record(public: str, obj: griffe.Object | griffe.Alias, depth: int) -> None:
        try:
            target = obj.final_target if obj.is_alias else obj  # type: ignore[union-attr]
        except (griffe.AliasResolutionError, griffe.CyclicAliasError):
            return
        paths.setdefault(public, public)
        paths.setdefault(target.path, public)
        if depth == 0 and target.is_class:
            for name, member in target.members.items():
                if not name.startswith("_"):
                    # Also under the class's own path: a member a face gives is defined elsewhere.
                    paths.setdefault(f"{target.path}.{name}", f"{public}.{name}")
                    record(f"{public}.{name}", member, 1)

    for module in modules:
        exported = None if module.exports is None else {str(name) for name in module.exports}
        for name, member in module.members.items():
            if name.startswith("_") or (exported is not None and name not in exported):
                continue
            if member.is_module:
                continue
            record(f"{module.path}.{name}", member, 0)
    return paths


def _scopes(obj: griffe.Object) -> list[str]:
    """Where a relative role target is looked up first: the object, its classes, its module."""
    scopes = []
    current: griffe.Object | None = obj
    while current is not None:
        if current.is_class or current.is_module:
            scopes.append(current.path)
        current = current.parent
    return scopes


def rewrite(text: str, scopes: list[str], public: dict[str, str]) -> str:
    """The Markdown for one reST docstring."""
    prose, fields = _split_fields(text.splitlines())
    lines = _literal_blocks(_versions(prose))
    if fields:
        lines = [*_strip_blank_end(lines), "", *fields]
    out = "\n".join(lines)
    out = LINK.sub(r"[\1](\2)", out)
    return ROLE.sub(lambda m: _role(m[1], m[2], scopes, public), out)


def _split_fields(lines: list[str]) -> tuple[list[str], list[str]]:
    """Separate the field list (each field and its indented continuation) from the prose."""
    prose: list[str] = []
    fields: list[str] = []
    in_field = False
    for line in lines:
        if FIELD.match(line):
            in_field = True
            fields.append(line)
        elif in_field and line[:1].isspace() and line.strip():
            fields.append(line)
        else:
            in_field = False
            prose.append(line)
    return prose, fields


def _strip_blank_end(lines: list[str]) -> list[str]:
    while lines and not lines[-1].strip():
        lines = lines[:-1]
    return lines


def _versions(lines: list[str]) -> list[str]:
    out = []
    for line in lines:
        match = VERSION.match(line.strip())
        if match:
            kind, version, rest = match.groups()
            text = f"{'Added' if kind == 'added' else 'Changed'} in version {version}"
            out.append(f"*{text}:* {rest}" if rest else f"*{text}.*")
        else:
            out.append(line)
    return out


def _literal_blocks(lines: list[str]) -> list[str]:
    """``Text::`` + blank line + indented block: ``Text:`` and a fenced Python block."""
    out: list[str] = []
    i = 0
    while i < len(lines):
        line = lines[i]
        if line.rstrip().endswith("::") and i + 1 < len(lines) and not lines[i + 1].strip():
            head = line.rstrip()[:-2].rstrip()
            if head:
                out.append(head + ":")
            block: list[str] = []
            j = i + 1
            while j < len(lines) and (not lines[j].strip() or lines[j][:1].isspace()):
                block.append(lines[j])
                j += 1
            block = _strip_blank_end(block)
            while block and not block[0].strip():
                block = block[1:]
            indent = min(len(b) - len(b.lstrip()) for b in block if b.strip()) if block else 0
            out += ["", "```python", *(b[indent:] for b in block), "```", ""]
            i = j
            continue
        out.append(line)
        i += 1
    return out


def _role(kind: str, target: str, scopes: list[str], public: dict[str, str]) -> str:
    if kind == "pep":
        return f"[PEP {target}](https://peps.python.org/pep-{int(target):04d}/)"
    short = target.startswith("~")
    name = target.lstrip("~.").removesuffix("()")
    shown = name.rsplit(".", 1)[-1] if short else name
    if kind in ("meth", "func"):
        shown += "()"
    for scope in ["", *scopes]:
        candidate = f"{scope}.{name}" if scope else name
        if candidate in public:
            return f"[`{shown}`][{public[candidate]}]"
    return f"`{shown}`"


def _docstring_from_comments(attr: griffe.Object, parser: Any) -> None:
    """Give an attribute the ``#:`` comment lines right above it (Sphinx's doc comments)."""
    module = attr.module
    if attr.lineno is None or not isinstance(module.filepath, Path):
        return
    try:
        source = module.lines_collection[module.filepath]
    except KeyError:
        source = module.filepath.read_text(encoding="utf-8").splitlines()
    comment: list[str] = []
    i = attr.lineno - 2
    while i >= 0 and source[i].strip().startswith("#:"):
        comment.insert(0, source[i].strip()[2:].strip())
        i -= 1
    if comment:
        attr.docstring = griffe.Docstring(
            "\n".join(comment),
            lineno=i + 2,
            endlineno=attr.lineno - 1,
            parent=attr,
            parser=parser,
        )
