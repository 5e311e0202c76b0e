"""The evaluation report of one run: `report.md` and one self-contained `report.html`, built
from the run's stored results only (`cluster.report.results`). Nothing here runs a model, so
`hrm-eval report RUN` regenerates the same bytes at any time.

    <run>/report.html        figures embedded (base64 PNG), readable offline and from a bucket
    <run>/report.md          the same content; figures are the PNG files below
    <run>/plots/<name>.png

Every number printed is a measured one; a section without data says so in one line. Each
section is built by its own module: summary, accuracy, halting, voting, health.
"""

from __future__ import annotations

from collections.abc import Callable

from hrm import storage
from hrm.secrets import redact

from cluster.report.accuracy import comparison, leaderboard, sets_and_tiers
from cluster.report.document import PLOTS_DIR, UNDEFINED, Block, Document, Section, Text, render_html, render_markdown
from cluster.report.halting import calibration, reasoning_depth
from cluster.report.health import checkpoint_health
from cluster.report.results import RunResults, load_results
from cluster.report.summary import run_summary
from cluster.report.voting import ensembles, voting

REPORT_HTML = "report.html"
REPORT_MD = "report.md"
NO_METRICS = "No metrics: the run failed before every unit was evaluated."


def write_report(run: str, other_protocol_run: str | None = None) -> tuple[str, str]:
    """Build the report of the run at `run` and publish plots, report.md and report.html
    (each atomically). `other_protocol_run`: a run of the same checkpoints and data under the
    other protocol, for the adaptive-halting savings. Returns (html URI, md URI)."""
    doc = build_report(load_results(run), load_results(other_protocol_run) if other_protocol_run else None)
    written = set()
    for figure in doc.figures():
        storage.write_bytes_atomic(storage.join(run, PLOTS_DIR, f"{figure.name}.png"), figure.png)
        written.add(f"{figure.name}.png")
    for stale in set(storage.list_files(storage.join(run, PLOTS_DIR))) - written:
        storage.delete(storage.join(run, PLOTS_DIR, stale))  # a plot this regeneration no longer has
    md_uri, html_uri = storage.join(run, REPORT_MD), storage.join(run, REPORT_HTML)
    storage.write_bytes_atomic(md_uri, redact(render_markdown(doc)).encode())
    storage.write_bytes_atomic(html_uri, redact(render_html(doc)).encode())
    return html_uri, md_uri


def build_report(r: RunResults, other: RunResults | None = None) -> Document:
    m = r.manifest
    intro: list[Block] = [Text(
        f"Run {m.run_id} ({m.status}), {len(m.checkpoints)} checkpoint(s) on {m.dataset['uri']} "
        f"[{m.dataset['split']}], {r.protocol} protocol, finished {m.finished_at}. Every figure is measured "
        f"on this run's stored results; {UNDEFINED} marks a figure that is undefined (no examples, or a rate "
        f"over a single class)."
    )]
    if m.status != "completed":
        intro.append(Text(f"The run failed: {m.error}" + (f" (unit {m.failed_unit})" if m.failed_unit else "")))
    sections = [
        Section("Run summary", run_summary(r)),
        _metric_section(r, "Leaderboard", lambda: leaderboard(r)),
        _metric_section(r, "Reasoning depth", lambda: reasoning_depth(r, other)),
        _metric_section(r, "Q-halt calibration", lambda: calibration(r)),
        _metric_section(r, "Per set and per tier", lambda: sets_and_tiers(r)),
        _metric_section(r, "Voting", lambda: voting(r)),
        _metric_section(r, "Ensembles", lambda: ensembles(r)),
        Section("Checkpoint health", checkpoint_health(r)),
        _metric_section(r, "Comparison", lambda: comparison(r)),
    ]
    return Document(title=f"hrm-eval report — run {m.run_id}", intro=intro, sections=sections)


def _metric_section(r: RunResults, title: str, build: Callable[[], list[Block]]) -> Section:
    if r.metrics is None:
        return Section(title, [Text(NO_METRICS)])
    return Section(title, build())
