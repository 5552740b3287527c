# The Quick Start of the werkpool 0.2 README, unchanged except where marked
# "Correction".
#
# Run it with werkpool installed (e.g. `pip install -e .` in the checkout):
#     python examples/quickstart.py
#
# Correction 1 (import lines): `from __future__ import annotations` added; the
#   repository's ruff configuration requires it first in every module. The seed's own
#   imports are unchanged.
# Correction 2: `print(result)` added after `result = await future`, so that running the
#   file shows the result (the seed assigned `result` and never used it, which ruff
#   reports as F841).
# Correction 3 (layout only): `ruff format` removed the trailing spaces of the seed's
#   blank lines and put two blank lines between top-level definitions.
from __future__ import annotations

import asyncio

from werkpool import WorkerPool


async def fetch_data(url):
    # Your async task here
    return f"Data from {url}"


async def main():
    pool = WorkerPool(size=10, rate=100)

    # Schedule tasks
    future = pool.run(lambda: fetch_data("https://example.com"))
    result = await future
    print(result)  # Correction 2: added, see the top of the file.

    await pool.shutdown()


asyncio.run(main())
