"""Tables and figures from study rows only: ``build_report(study_dir)`` rebuilds without retraining."""

from .build import build_report, load_rows

__all__ = ["build_report", "load_rows"]
