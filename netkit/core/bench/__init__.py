"""Load-generator arithmetic without I/O, for ``netkit bench``.

- ``plan``: :class:`LoadPlan`, open-loop :class:`Pacing`, payload memory, ``--rate`` values;
- ``histogram``: :class:`LatencyHistogram` (HDR, nanoseconds, mergeable);
- ``result``: :class:`BenchResult`, merging results, the default verdict;
- ``thresholds``: ``--fail-if`` expressions.
"""
