"""Artifacts of an evaluation: walk GIFs, contact sheets, curve plots, results.json, report.html."""

from harness.report.images import contact_sheet, walk_gif_frames, write_gif, write_png
from harness.report.plots import plot_curves
from harness.report.html import write_report_html

__all__ = [
    "contact_sheet",
    "plot_curves",
    "walk_gif_frames",
    "write_gif",
    "write_png",
    "write_report_html",
]
