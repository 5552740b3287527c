"""The faces of :class:`~werkpool.WorkerPool`: its public methods, one concept per module.

``WorkerPool`` (in :mod:`werkpool._pool`) is composed of them as mixins: the run-time control of
its limits, hooks and pauses (:mod:`._control`), the submission of async functions
(:mod:`._submission`) and of blocking ones, in threads (:mod:`._threads`). Each face reads the
pool's state from the slots ``WorkerPool`` declares and imports no other face. Beside them,
:func:`werkpool.settle` (:mod:`._settle`), which a job calls from inside its attempt.
"""
