# Example 5 of the werkpool 0.2 README, "Advanced: Retries and Timeouts", unchanged
# except:
#
# Correction 1 (import lines): `from __future__ import annotations` added; the
#   repository's ruff configuration requires it first in every module. The seed's own
#   imports are unchanged.
# Correction 2 (layout only): `ruff format` removed the trailing spaces of the seed's
#   blank lines and put two blank lines between top-level definitions, a blank line
#   after `import random` and a trailing comma after the last argument of the multi-line
#   pool.run(...) call.
#
# Run it with werkpool installed:
#     python examples/seed_5_retries.py
# The outcome is random: 30 % of attempts fail with ConnectionError and are retried up
# to 3 times, after 2-3 s, 4-5 s, then 8-9 s (the default backoff).
from __future__ import annotations

import asyncio

from werkpool import WorkerPool


async def unreliable_api_call(endpoint):
    # Might fail occasionally
    import random

    if random.random() < 0.3:
        raise ConnectionError("Network error")
    await asyncio.sleep(0.1)
    return f"Data from {endpoint}"


async def main():
    pool = WorkerPool(size=10, rate=50)

    future = pool.run(
        lambda: unreliable_api_call("/data"),
        timeout=5,  # Max 5 seconds per attempt
        retries=3,  # Retry up to 3 times
        retryable_exceptions=[ConnectionError, TimeoutError],
    )

    try:
        result = await future
        print(f"Success: {result}")
    except Exception as e:
        print(f"Failed after retries: {e}")

    await pool.shutdown()


asyncio.run(main())
