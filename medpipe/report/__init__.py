"""The run report: one self-contained HTML page (reports/report.html) built from a run's files.

Example:
    >>> from medpipe.report import build_report  # doctest: +SKIP
    >>> build_report(config, "runs/default", "runs/default/reports/report.html")  # doctest: +SKIP
"""

from medpipe.report.build import build_report

__all__ = ["build_report"]
