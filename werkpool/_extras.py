"""What an optional extra's module says when the extra is not installed.

``import werkpool.redis`` without ``werkpool[redis]`` would fail with a bare ``No module named
'coredis'``, which does not say what to install; :func:`needs_extra` turns it into an error that
does.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Generator

__all__ = ["needs_extra"]


@contextmanager
def needs_extra(module: str, extra: str, package: str) -> Generator[None, None, None]:
    """Around the imports of *module* (a public module of werkpool), which need *package*,
    installed by werkpool's *extra*: if *package* (or one of its submodules) is missing, raise a
    :class:`ModuleNotFoundError` that names the install command, the original error chained.

    Still a :class:`ModuleNotFoundError`, with the missing module's ``name``, so that code that
    catches ``ImportError`` or reads ``error.name`` works as before. A missing module that is not
    *package*'s propagates unchanged: installing the extra would not help.
    """
    try:
        yield
    except ModuleNotFoundError as error:
        missing = error.name or ""
        if missing != package and not missing.startswith(package + "."):
            raise
        raise ModuleNotFoundError(
            f'{module} needs {package}, which is not installed: pip install "werkpool[{extra}]"',
            name=error.name,
            path=error.path,
        ) from error
