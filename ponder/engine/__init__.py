"""The engine: the loop that drives search jobs, and what a job leaves on disk.

``engine`` (the loop and ``Engine``), ``loop`` (its dispatch/deliver halves), ``jobs``
(one job's scheduler, ledger and run directory), ``service`` (many jobs on one set of
pools, for ``ponder serve``), ``pools`` (the interface the loop drives) with
``inprocess`` (pools without Ray), ``checkpoint``, ``results``, ``rundir``, ``traces``,
``progress``, and ``solve`` (``ponder.solve``). Nothing here imports Ray at module level:
Ray pools come from ``ponder.cluster``.
"""
