"""The akua-crawler benchmark: ``python -m bench`` (``--quick`` for a smaller run).

Builds its own world on loopback (a seeded docker-registry, the Akua double in
a subprocess), runs the crawler as a subprocess and reports ratios measured
in the same run; see ``bench/RESULTS.md`` for the latest figures.
"""
