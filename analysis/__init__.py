"""Stream-latency analysis: raw results -> summary.json, report.md, charts, regression gate.

Public API (import the submodule; this package imports nothing, so load users
that only need ``stream_harness.contract.schema`` stay light):

- ``analysis.frames.frames_from_records(records) -> (streams, events)``
- ``analysis.results.write_results(dir, run, streams, events) -> summary``,
  ``load_results(dir) -> Results``, ``ResultsError``
- ``analysis.metrics.analyse(run, streams, events) -> Analysis`` (summary, filled streams)
- ``analysis.buffering.classify(evidence, saturated=...) -> Verdict`` and the thresholds
- ``analysis.compare.compare_runs(base, current, thresholds) -> Comparison``,
  ``load_thresholds()``
- ``analysis.report.build_report(dir)``, ``render_compare_markdown(...)``
- ``tests.support.synthetic.synthetic_run(SyntheticSpec(...))`` for tests and benchmarks
- CLI: ``python -m analysis report DIR`` / ``python -m analysis compare BASE CURRENT``
"""
