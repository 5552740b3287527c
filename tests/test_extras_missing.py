"""#25 item 4: importing an extra's module without the extra says how to install it.

Each case runs in a fresh interpreter where the extra's package is hidden (``sys.modules[name] =
None``, as if it were not installed), imports the werkpool module, and reports what was raised.
A subprocess, so that the test process keeps its own imported modules as they are.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from typing import Any

import pytest

#: (werkpool module, the extra it needs, the package that extra installs, hidden here)
EXTRAS = [
    ("werkpool.redis", "redis", "coredis"),
    ("werkpool.httpx", "httpx", "httpx"),
    ("werkpool.otel", "otel", "opentelemetry"),
    ("werkpool.prometheus", "prometheus", "prometheus_client"),
]


def import_hiding(module: str, hidden: str) -> dict[str, Any]:
    """Import *module* in a fresh interpreter with *hidden* made unimportable; what it raised."""
    script = textwrap.dedent(
        f"""
        import importlib, json, sys
        sys.modules[{hidden!r}] = None  # as if it were not installed
        try:
            importlib.import_module({module!r})
        except ImportError as error:
            cause = error.__cause__
            print(json.dumps({{
                "type": type(error).__name__,
                "module_not_found": isinstance(error, ModuleNotFoundError),
                "message": str(error),
                "name": error.name,
                "cause": None if cause is None else type(cause).__name__,
                "cause_name": getattr(cause, "name", None),
                "suppressed_context": error.__suppress_context__,
            }}))
        else:
            print(json.dumps(None))
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr
    result: dict[str, Any] = json.loads(done.stdout)
    return result


@pytest.mark.parametrize(("module", "extra", "package"), EXTRAS, ids=[e[1] for e in EXTRAS])
def test_a_missing_extra_names_the_install_command(module: str, extra: str, package: str) -> None:
    """A ModuleNotFoundError (so ``except ImportError`` still catches it) for the same module
    name, whose message says what to install, with the original error as its cause."""
    raised = import_hiding(module, package)
    assert raised is not None, f"{module} imported with {package} hidden"
    assert raised["module_not_found"]
    assert raised["name"] == package
    assert raised["message"] == (
        f'{module} needs {package}, which is not installed: pip install "werkpool[{extra}]"'
    )
    assert raised["cause"] == "ModuleNotFoundError"
    assert raised["cause_name"] == package
    assert raised["suppressed_context"]


def test_another_missing_module_is_not_blamed_on_the_extra() -> None:
    """A module that is not the extra's (here one of the standard library the transport uses)
    propagates as it is: the install command would not help."""
    raised = import_hiding("werkpool.httpx", "email.utils")
    assert raised is not None
    assert raised["name"] == "email.utils"
    assert "pip install" not in raised["message"]
    assert raised["cause"] is None


@pytest.mark.parametrize(("module", "extra", "package"), EXTRAS, ids=[e[1] for e in EXTRAS])
def test_with_the_extra_the_module_imports(module: str, extra: str, package: str) -> None:
    """The check costs nothing when the extra is there: the module imports (the test
    environment has every extra)."""
    raised = import_hiding(module, "a_module_nobody_imports")
    assert raised is None
