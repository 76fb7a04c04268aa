"""``make stress``: the whole simulated stack under sustained load and faults (issue 14).

The schedule is :mod:`stress.run`'s; ``python -m stress`` is :mod:`stress.cli`.
"""
