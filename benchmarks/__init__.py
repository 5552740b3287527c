"""werkpool's benchmark suite: ``python3 -m nox -s bench`` (or ``python3 -m benchmarks.run``).

See benchmarks/README.md for the scenarios and what each number means.
"""

from __future__ import annotations
