"""The study report: figures and one self-contained HTML page built from the run's CSVs."""

from unetq.report.html import build_report

__all__ = ["build_report"]
