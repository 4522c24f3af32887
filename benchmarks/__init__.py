"""Benchmarks for operation_dispatcher (design.md section 11).

Run them all with ``python -m benchmarks`` (or ``make bench``); ``python -m benchmarks queue``
runs only the modules whose name contains "queue". Every ``bench_*.py`` module runs in its own
fresh interpreter, so one benchmark's memory, threads or warmed caches cannot skew another.

Each module prints JSON lines, one figure per line::

    {"bench": "queue.add_us_per_op@100k", "value": 3.1, "unit": "us/op",
     "baseline": 0.52, "ratio": 5.96, "target": "<= 20 us/op", "meets_target": true, ...}

``baseline`` is a plain-stdlib equivalent measured in the same run on the same machine, and
``ratio`` is ``value / baseline``; see :mod:`benchmarks.common`.
"""
