"""``ponder sweep``: strategies x budgets grids, their tables, frontier, power-law fits and plots.

``spec`` (the sweep file and its grid), ``names`` (cell directories), ``fingerprint``
(when a finished cell is still valid), ``run`` (running the cells), ``report`` with
``frontier`` and ``plot`` (the analysis a sweep leaves).
"""
