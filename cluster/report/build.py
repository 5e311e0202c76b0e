"""The evaluation report of one run: `report.md` and one self-contained `report.html`, built
from the run's stored results only (`cluster.report.results`). Nothing here runs a model, so
`hrm-eval report RUN` regenerates the same bytes at any time.

    <run>/report.html        figures embedded (base64 PNG), readable offline and from a bucket
    <run>/report.md          the same content; figures are the PNG files below
    <run>/plots/<name>.png

Every number printed is a measured one; a section without data says so in one line. Each
section is built by its own module: summary, accuracy, halting, voting, health.

A run that did not complete (stopped, or failed before every unit was committed) gets a
partial report: the figures its committed units give, a PARTIAL banner above everything
saying how much of the plan they cover, and no votes. Only the report files are written.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

from hrm import storage
from hrm.secrets import redact

from cluster.config import limited_to
from cluster.report.accuracy import comparison, leaderboard, sets_and_tiers
from cluster.report.audits import audits
from cluster.report.document import (
    PLOTS_DIR,
    UNDEFINED,
    Banner,
    Block,
    Document,
    Section,
    Text,
    render_html,
    render_markdown,
)
from cluster.report.format import count
from cluster.report.gallery import failure_gallery
from cluster.report.halting import calibration, reasoning_depth
from cluster.report.health import checkpoint_health
from cluster.report.model_card import model_card
from cluster.report.results import RunResults, failure, load_results
from cluster.report.summary import run_summary, stopped_summary
from cluster.report.text import text_checks
from cluster.report.voting import ensembles, voting

REPORT_HTML = "report.html"
REPORT_MD = "report.md"
NO_METRICS = "No figures: no unit of this run was committed on the plain data."


def write_report(run: str, other_protocol_run: str | None = None) -> tuple[str, str]:
    """Build the report of the run at `run` and publish plots, report.md and report.html
    (each atomically); a run that did not complete gets a partial report, and nothing else
    is written. `other_protocol_run`: a run of the same checkpoints and data under the
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
    if m is not None:
        intro: list[Block] = [Text(
            f"Run {m.run_id} ({m.status}), {len(m.checkpoints)} checkpoint(s) on {m.dataset['uri']} "
            f"[{m.dataset['split']}], {r.protocol} protocol, finished {m.finished_at}. Every figure is measured "
            f"on this run's stored results; {UNDEFINED} marks a figure that is undefined (no examples, or a rate "
            f"over a single class)."
        )]
    else:
        intro = [Text(
            f"Run {r.run_id}. A run's config, data and plan are recorded in its manifest, which this one lacks: this "
            f"report holds only what its committed units record. Every figure is measured on them; {UNDEFINED} marks "
            "a figure that is undefined or not known."
        )]
    sections = [
        Section("Run summary", run_summary(r) if m is not None else stopped_summary(r)),
        _metric_section(r, "Leaderboard", lambda: leaderboard(r)),
        _metric_section(r, "Reasoning depth", lambda: reasoning_depth(r, other)),
        _metric_section(r, "Q-halt calibration", lambda: calibration(r)),
        _metric_section(r, "Per set and per tier", lambda: sets_and_tiers(r)),
        _metric_section(r, "Voting", lambda: voting(r)),
        _metric_section(r, "Ensembles", lambda: ensembles(r)),
        *([Section("Re-votes", revotes(r))] if r.revotes else []),
        *([Section("Text checks", text_checks(r))] if (r.metrics or {}).get("text") else []),
        *([Section("Model card", model_card(r))] if (r.metrics or {}).get("model_card") else []),
        *([Section("Audits", audits(r))] if (r.metrics or {}).get("audits") else []),
        Section("Checkpoint health", checkpoint_health(r)),
        _metric_section(r, "Comparison", lambda: comparison(r)),
        _metric_section(r, "Failure gallery", lambda: failure_gallery(r)),
    ]
    title = f"hrm-eval report — run {r.run_id}" + (" (partial)" if r.partial else "")
    return Document(title=title, intro=intro, sections=sections, banner=banner(r))


def revotes(r: RunResults) -> list[Block]:
    """Each `hrm-eval vote` of this run, with its settings, rendered as the run's own votes are."""
    blocks: list[Block] = [Text("Votes computed again later from this run's stored predictions (`hrm-eval vote`), "
                                "oldest first; the run's own votes above are unchanged.")]
    for document in r.revotes:
        settings = document["settings"]
        ensembles_text = ", ".join(f"{e['name']} ({'top ' + str(e['top_k']) if e.get('top_k') else ', '.join(e['members'])}"
                                   f", {e['method']})" for e in settings["ensembles"]) or "none"
        blocks.append(Text(f"Re-vote {document['id']} ({document['created_at']}): pass@k "
                           f"{', '.join(map(str, settings['voting']['pass_k']))}; TTA level {settings['tta']['level']}; "
                           f"ensembles: {ensembles_text}."))
        again = replace(r, metrics={**r.metrics, "votes": document["votes"]})
        blocks += voting(again) + ensembles(again)
    return blocks


def banner(r: RunResults) -> Banner | None:
    """A partial run says so above everything, with how much of it the figures cover; a
    failed run whose figures are complete says which checkpoints failed."""
    p, m = r.partial, r.manifest
    if p is None:
        dataset = m.config.dataset
        look = limited_to(dataset.limit, dataset.sample_seed)
        if m.status == "completed":
            fields = "dataset.limit" if dataset.sample_seed is None else "dataset.limit, dataset.sample_seed"
            return None if look is None else Banner(
                "LIMITED", f"only {look} were evaluated ({fields}): a quick look, not the split's figures.")
        return Banner("FAILED", f"{failure(m)}. The figures of the {len(r.names)} checkpoint(s) shown are "
                                "complete: each was evaluated on every planned unit.")
    units = sum(p.units.values())
    if p.planned_units is None:
        covered = (f"{units} unit(s) committed, {count(figure_examples(r))} example(s) in the figures; how many "
                   "were planned is not known (the plan is in the manifest)")
    else:
        covered = (f"{units} of {sum(p.planned_units.values())} planned unit(s) committed, "
                   f"{count(figure_examples(r))} of {count(p.planned_examples * len(p.planned_units))} "
                   "example(s) in the figures")
    left_out = "".join(f" {name} has no figures: {why}." for name, why in p.left_out.items())
    return Banner("PARTIAL", f"{p.why}. These are the figures of what it committed: {covered}. A checkpoint's "
                             "figures cover its committed examples only (see its examples column); no votes or "
                             f"ensembles, which need every unit.{left_out}")


def figure_examples(r: RunResults) -> int:
    return sum(r.figures(name)["count"] for name in r.names)


def _metric_section(r: RunResults, title: str, build: Callable[[], list[Block]]) -> Section:
    if r.metrics is None:  # a partial run that committed nothing to count
        return Section(title, [Text(NO_METRICS)])
    return Section(title, build())
