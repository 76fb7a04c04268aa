"""Benchmarks of attested-random (issue 6), run with ``make bench`` (``python -m bench``).

Each scenario starts the real programs (processes, Unix sockets, loopback HTTP), warms up, measures several
rounds and reports medians and spreads; every comparison is a ratio measured in the same run. Results go to
``bench/results/`` (Markdown, JSON, PNG) and the terminal.
"""
