"""The public surface: exports, module names, version."""

from __future__ import annotations

import importlib.metadata
import inspect

import pytest

import werkpool


def test_all_lists_exactly_the_public_names() -> None:
    """__all__ matches the public attributes of the package."""
    public = {
        name
        for name, value in vars(werkpool).items()
        if not name.startswith("_") and not inspect.ismodule(value) and name != "annotations"
    }
    assert set(werkpool.__all__) == public


def test_reexports_claim_the_public_module() -> None:
    """Classes and functions say werkpool, not werkpool._private, in reprs and tracebacks."""
    for name in werkpool.__all__:
        value = getattr(werkpool, name)
        if inspect.isclass(value) or inspect.isfunction(value):
            assert value.__module__ == "werkpool", name


def test_version_comes_from_the_installed_metadata() -> None:
    """__version__ is read lazily from the distribution metadata."""
    assert werkpool.__version__ == importlib.metadata.version("werkpool")


def test_every_public_name_has_a_docstring() -> None:
    """Every public class, function and method is documented."""
    for name in werkpool.__all__:
        value = getattr(werkpool, name)
        if inspect.isclass(value) or inspect.isfunction(value):
            assert inspect.getdoc(value), name
        if inspect.isclass(value):
            for attr, member in vars(value).items():
                if not attr.startswith("_") and callable(member):
                    assert inspect.getdoc(member), f"{name}.{attr}"


def test_event_is_a_deprecated_alias_of_job_event() -> None:
    """``werkpool.Event`` (0.3) is ``werkpool.JobEvent``, with a DeprecationWarning at each
    access (an attribute or ``from werkpool import Event``), and not in ``__all__``."""
    with pytest.warns(DeprecationWarning, match=r"werkpool\.Event is deprecated.*JobEvent"):
        alias = werkpool.Event
    assert alias is werkpool.JobEvent
    with pytest.warns(DeprecationWarning, match=r"werkpool\.JobEvent"):
        from werkpool import Event
    assert Event is werkpool.JobEvent
    assert "JobEvent" in werkpool.__all__
    assert "Event" not in werkpool.__all__
    assert "Event" not in vars(werkpool)  # so that every access goes through the warning
    assert werkpool.JobEvent.__name__ == "JobEvent"
    assert werkpool.JobEvent.__module__ == "werkpool"


def test_every_method_of_worker_pool_is_named_after_it() -> None:
    """WorkerPool is written as faces (werkpool/_facade/), but its methods' reprs and Python's
    own errors for a wrong call name WorkerPool, the class users know."""
    names = [name for name in dir(werkpool.WorkerPool) if not name.startswith("_")]
    assert {"map", "map_sync", "pause", "run", "set_limits", "size"} <= set(names)
    for name in names:
        member = inspect.getattr_static(werkpool.WorkerPool, name)
        function = member.fget if isinstance(member, property) else member
        if inspect.isfunction(function):
            assert function.__qualname__ == f"WorkerPool.{name}", name
