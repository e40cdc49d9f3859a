"""A self-contained HTML report: each class's GIF next to its checks and verdict."""

from __future__ import annotations

import html
from pathlib import Path

from harness.gate import GateResult

_STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em; color: #222; }
h1 { margin-bottom: 0.2em; }
.verdict { font-weight: bold; padding: 0.1em 0.5em; border-radius: 4px; color: white; }
.pass { background: #2e7d32; } .fail { background: #c62828; } .error { background: #6a1b9a; }
section { display: flex; gap: 1.5em; border-top: 1px solid #ddd; padding: 1em 0; }
table { border-collapse: collapse; font-size: 0.9em; }
td, th { padding: 0.2em 0.6em; text-align: left; border-bottom: 1px solid #eee; }
img { image-rendering: pixelated; }
.meta { color: #555; font-size: 0.9em; }
"""


def _badge(status: str) -> str:
    return f'<span class="verdict {html.escape(status)}">{html.escape(status.upper())}</span>'


def _number(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.4g}"


def write_report_html(
    path: Path,
    title: str,
    gate: GateResult,
    class_files: dict[str, dict[str, str]],
    facts: dict[str, str],
) -> None:
    """Write `report.html`; `class_files` maps a class to its artifact names relative to `path`."""
    parts = [
        "<!doctype html><html><head><meta charset='utf-8'>",
        f"<title>{html.escape(title)}</title><style>{_STYLE}</style></head><body>",
        f"<h1>{html.escape(title)} {_badge(gate.verdict)}</h1>",
        "<p class='meta'>"
        + "<br>".join(f"{html.escape(k)}: {html.escape(str(v))}" for k, v in facts.items())
        + "</p>",
    ]
    for result in gate.classes:
        files = class_files.get(result.name, {})
        parts.append("<section><div>")
        if "gif" in files:
            parts.append(f"<img src='{html.escape(files['gif'])}' alt='walk of {html.escape(result.name)}'>")
        parts.append("</div><div>")
        parts.append(f"<h2>{html.escape(result.name)} {_badge(result.status)}</h2>")
        if result.error:
            parts.append(f"<p>{html.escape(result.error)}</p>")
        parts.append(
            "<table><tr><th>check</th><th>statistic</th><th>value</th><th>95% interval</th>"
            "<th>threshold</th><th>result</th></tr>"
        )
        for check in result.checks:
            record = check.to_dict()
            interval = f"[{_number(record.get('ci_low'))}, {_number(record.get('ci_high'))}]"
            parts.append(
                f"<tr><td>{html.escape(record['check'])}</td>"
                f"<td>{html.escape(str(record['statistic']))}</td>"
                f"<td>{_number(record['value'])}</td><td>{interval}</td>"
                f"<td>{html.escape(record['op'])} {_number(record['threshold'])}</td>"
                f"<td>{_badge(record['status'])}</td></tr>"
            )
        parts.append("</table>")
        links = [
            f"<a href='{html.escape(name)}'>{html.escape(kind)}</a>"
            for kind, name in files.items()
            if kind != "gif"
        ]
        if links:
            parts.append("<p class='meta'>" + " · ".join(links) + "</p>")
        parts.append("</div></section>")
    parts.append("</body></html>")
    path.write_text("\n".join(parts), encoding="utf-8")
