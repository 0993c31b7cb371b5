from unetkit.report.build import write_report

__all__ = ["write_report"]
