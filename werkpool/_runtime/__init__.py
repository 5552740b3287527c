"""The I/O runtime: the loop a pool binds to, its worker tasks, futures, threads and the
remote half of shared limits. It drives :mod:`werkpool._core`.
"""
