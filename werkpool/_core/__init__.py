"""The sans-I/O core: job records, limits, lanes and the scheduler. Nothing here awaits or
imports an event loop; the runtime passes ``now`` in.
"""
