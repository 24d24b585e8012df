"""What the fake backend, the load users and the analysis agree on, defined once.

- :mod:`~stream_harness.contract.kinds`: transports, endpoints, event kinds,
  stream statuses, error kinds, verdicts and client kinds as enums;
- :mod:`~stream_harness.contract.protocol`: endpoint paths, the Socket.io
  namespace and tasks, header names, the fake backend's measurement endpoints;
- :mod:`~stream_harness.contract.schema`: the raw-data columns of a result set
  (stream record fields, their dtypes and defaults, event columns);
- :mod:`~stream_harness.contract.summary`: the typed objects of ``summary.json``.

This package imports nothing of the harness's own, so every part can use it.
"""
