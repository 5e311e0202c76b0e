"""The evaluation report of one run: `report.md` and one self-contained `report.html`, built
from the run's stored results only (manifest.json, metrics.json, leaderboard.parquet,
health.json, the committed unit records and one checkpoint's prediction keys). Nothing
here runs a model, so `hrm-eval report RUN` regenerates the same bytes at any time.

    <run>/report.html        figures embedded (base64 PNG), readable offline and from a bucket
    <run>/report.md          the same content; figures are the PNG files below
    <run>/plots/<name>.png

Every number printed is a measured one; a section without data says so in one line.
"""

from __future__ import annotations

import posixpath
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import yaml

from hrm import storage
from hrm.errors import InputError
from hrm.health import COMPONENTS

from cluster import report_plots as plots
from cluster import results
from cluster.health import read_health, training_runs
from cluster.report_document import (
    PLOTS_DIR,
    UNDEFINED,
    Block,
    Code,
    Document,
    Figure,
    Section,
    Table,
    Text,
    render_html,
    render_markdown,
)
from cluster.results import CheckpointEntry, Manifest

REPORT_HTML = "report.html"
REPORT_MD = "report.md"
PLOTTED_CHECKPOINTS = 8  # more lines than this make a plot unreadable; the tables hold all
COLLAPSE_ROWS = 40  # longer detail tables fold away in the HTML
BEST = "★"
TRM_RULE = "TRM rule: per-test-input fraction"
HRM_RULE = "HRM rule: all test inputs of a puzzle"
NO_METRICS = "No metrics: the run failed before every unit was evaluated."


# --------------------------------------------------------------------------- the stored results


@dataclass
class CheckpointCost:
    """What the committed unit records measured for one checkpoint."""

    examples: int
    forward_steps: int
    eval_s: float
    peak_rss_bytes: int | None  # the evaluating actors' process peak, up to its last unit
    peak_gpu_bytes: int | None


@dataclass
class RunResults:
    run: str
    manifest: Manifest
    metrics: dict[str, Any] | None  # None when the run failed before aggregating
    leaderboard: list[dict[str, Any]]  # rank order
    health: dict[str, Any] | None
    costs: dict[str, CheckpointCost]
    devices: list[str]  # what the units ran on (with GPU names), from their records
    puzzles: int | None  # distinct (set, puzzle) pairs every checkpoint was evaluated on

    @property
    def names(self) -> list[str]:
        return [c.name for c in self.manifest.checkpoints]

    @property
    def protocol(self) -> str:
        return self.manifest.config["eval"]["protocol"]

    @property
    def best(self) -> str | None:
        return self.leaderboard[0]["checkpoint"] if self.leaderboard else None

    def figures(self, name: str) -> dict[str, Any]:
        return self.metrics["checkpoints"][name]["metrics"]["all"]

    def votes(self) -> dict[str, Any]:
        return (self.metrics or {}).get("votes") or {}


def load_results(run: str) -> RunResults:
    manifest = results.read_manifest(run)
    has_metrics = storage.exists(storage.join(run, results.METRICS))
    metrics = results.read_metrics(run) if has_metrics else None
    leaderboard = results.read_leaderboard(run).to_pylist() if has_metrics else []
    records = results.read_unit_records(run, {u.id for u in manifest.units})
    return RunResults(
        run=run,
        manifest=manifest,
        metrics=metrics,
        leaderboard=sorted(leaderboard, key=lambda row: row["rank"]),
        health=read_health(run),
        costs=_costs(records.values()),
        devices=sorted({r.actor.device + (f" ({r.actor.gpu})" if r.actor.gpu else "") for r in records.values()}),
        puzzles=_puzzles(run, manifest) if has_metrics else None,
    )


def _costs(records: Iterable[results.UnitRecord]) -> dict[str, CheckpointCost]:
    costs: dict[str, CheckpointCost] = {}
    for record in records:
        cost = costs.setdefault(record.checkpoint, CheckpointCost(0, 0, 0.0, None, None))
        cost.examples += record.examples
        cost.forward_steps += record.forward_steps
        cost.eval_s += record.timings["eval_s"]
        cost.peak_rss_bytes = _max(cost.peak_rss_bytes, record.actor.peak_rss_bytes)
        cost.peak_gpu_bytes = _max(cost.peak_gpu_bytes, record.actor.peak_gpu_bytes)
    return costs


def _max(a: int | None, b: int | None) -> int | None:
    return b if a is None else a if b is None else max(a, b)


def _puzzles(run: str, manifest: Manifest) -> int:
    """Every checkpoint sees the same examples, so one checkpoint's predictions count them."""
    table = results.read_predictions(run, manifest.checkpoints[0].name).select(["set", "puzzle_index"])
    return len(set(zip(table.column("set").to_pylist(), table.column("puzzle_index").to_pylist())))


# --------------------------------------------------------------------------- entry points


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
    storage.write_bytes_atomic(md_uri, render_markdown(doc).encode())
    storage.write_bytes_atomic(html_uri, render_html(doc).encode())
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


# --------------------------------------------------------------------------- formatting


def pct(x: float | None, digits: int = 2) -> str:
    return UNDEFINED if x is None else f"{100 * x:.{digits}f}"


def num(x: float | None, digits: int = 4) -> str:
    return UNDEFINED if x is None else f"{x:,.{digits}f}"


def sci(x: float | None) -> str:
    return UNDEFINED if x is None else f"{x:.3e}"


def count(n: int | None) -> str:
    return UNDEFINED if n is None else f"{n:,}"


def mib(n: int | None) -> str:
    return UNDEFINED if n is None else f"{n / 2**20:,.2f}"


def seconds(s: float | None) -> str:
    return UNDEFINED if s is None else f"{s:,.1f} s"


def exact_with_ci(fig: dict[str, Any]) -> str:
    if fig["exact_accuracy"] is None:
        return UNDEFINED
    return f"{pct(fig['exact_accuracy'])} ({pct(fig['exact_ci_low'])}–{pct(fig['exact_ci_high'])})"


def plotted(names: list[str], keep: Iterable[str | None] = ()) -> list[str]:
    """At most PLOTTED_CHECKPOINTS names in their order: evenly spaced, always with the first,
    the last and any of `keep` (the best)."""
    if len(names) <= PLOTTED_CHECKPOINTS:
        return names
    wanted = {names[0], names[-1], *(k for k in keep if k)}
    spare = PLOTTED_CHECKPOINTS - len(wanted)
    wanted |= {names[round(i * (len(names) - 1) / (spare + 1))] for i in range(1, spare + 1)}
    return [n for n in names if n in wanted]


def _shown(shown: list[str], names: list[str]) -> str:
    if len(shown) == len(names):
        return ""
    return f" {len(shown)} of {len(names)} checkpoints drawn (first, last, best, evenly spaced); the table has all."


def _throughput(cost: CheckpointCost | None) -> float | None:
    return cost.examples / cost.eval_s if cost and cost.eval_s > 0 else None


def _total_component(r: RunResults, name: str) -> dict[str, Any] | None:
    if r.health is None or name not in r.health["checkpoints"]:
        return None
    return next(c for c in r.health["checkpoints"][name]["components"] if c["component"] == "total")


# --------------------------------------------------------------------------- 1. run summary


def run_summary(r: RunResults) -> list[Block]:
    m = r.manifest
    cfg = m.config
    ev, cl = cfg["eval"], cfg["cluster"]
    t = m.timings
    hw = m.hardware
    driver = hw.get("driver", {})
    counts = m.counts
    steps = str(ev["steps"] or "halt_max_steps")
    if ev["protocol"] == "fixed":
        here = ""
        if not ev["steps"] and r.metrics is not None:  # every example ran exactly that many: measured
            here = f" ({', '.join(sorted({s for n in r.names for s in r.figures(n)['steps_histogram']}, key=int))} here)"
        protocol = f"fixed: every example runs all {steps} ACT steps{here}, as the reference evaluator does"
    else:
        protocol = f"adaptive: an example halts once q_halt > q_continue, after {ev['min_steps']} to {steps} ACT steps"
    if counts.get("evaluated"):
        rate = f"{t['examples_per_s']:,.1f} (examples evaluated in this run / evaluation wall time)"
    else:
        rate = f"none evaluated in this run: all {counts.get('resumed', 0)} units were committed by an earlier one"
    actors = hw.get("actors", [])
    actor_hosts = sorted({a["hostname"] for a in actors})
    resources = hw.get("cluster_resources") or {}
    rows = [
        ["run id", m.run_id],
        ["status", m.status + (f": {m.error}" if m.error else "")],
        ["started / finished (UTC)", f"{m.started_at} / {m.finished_at}"],
        ["config sha256", m.config_hash],
        ["git sha", m.git_sha or "not a git checkout"],
        ["versions", ", ".join(f"{k} {v}" for k, v in m.versions.items())],
        ["dataset", f"{m.dataset['uri']} [{m.dataset['split']}]"],
        ["dataset sets", ", ".join(m.dataset["sets"])],
        ["dataset examples", count(m.dataset["examples"])],
        ["puzzles", count(r.puzzles)],
        ["dataset sha256", m.dataset["content_hash"]],
        ["protocol", protocol],
        ["batch size / dtype", f"{ev['batch_size']} / {ev['dtype'] or 'each checkpoint’s forward_dtype'}"],
        ["device", ", ".join(r.devices) or UNDEFINED],
        ["actors", f"{cl['actors']} ({cl['cpus_per_actor']} CPU, {cl['gpus_per_actor']} GPU, "
                   f"torch threads {cl['torch_threads'] or 'default'} each)"],
        ["units", ", ".join(f"{v} {k}" for k, v in counts.items())],
        ["model loads", f"{m.scheduling['model_loads']} ({num(m.scheduling['loads_per_checkpoint'], 2)} per "
                        "evaluated checkpoint)" if counts.get("evaluated") else "none: no unit evaluated in this run"],
        ["duration: total", seconds(t.get("total_s"))],
        ["duration: preflight", seconds(t.get("preflight_s"))],
        ["duration: actors ready", seconds(t.get("actors_ready_s")) if "actors_ready_s" in t else "no actor started"],
        ["duration: evaluation", seconds(t.get("evaluate_s"))],
        ["examples/s", rate],
        ["peak memory: driver RSS (MiB)", mib(driver.get("peak_rss_bytes"))],
        ["peak memory: actor RSS (MiB)", mib(hw.get("peak_actor_rss_bytes")) if hw.get("peak_actor_rss_bytes")
         else "no actor ran in this run"],
        ["peak memory: actor GPU (MiB)", mib(hw.get("peak_actor_gpu_bytes")) if hw.get("peak_actor_gpu_bytes")
         else "no GPU used"],
        ["hardware: driver", f"{driver.get('hostname')}, {driver.get('cpus')} CPUs, {driver.get('platform')}"],
        ["hardware: actors", f"{len(actors)} actor process(es) on {', '.join(actor_hosts)}" if actors
         else "none started in this run"],
        ["hardware: cluster", ", ".join(f"{k} {v:g}" for k, v in sorted(resources.items())
                                        if k in ("CPU", "GPU")) or "no Ray cluster in this run"],
    ]
    checkpoints = Table(
        ["checkpoint", "family", "step", "units", "examples", "loads", "sha256", "uri"],
        [[c.name, c.family or UNDEFINED, count(c.step), count(c.units), count(c.examples), count(c.loads),
          c.content_hash or UNDEFINED, c.uri] for c in m.checkpoints],
        caption="Checkpoints, in plan order",
        collapsed=len(m.checkpoints) > COLLAPSE_ROWS,
    )
    return [
        Table(["item", "value"], rows),
        checkpoints,
        Code("The run config (as validated)", yaml.safe_dump(cfg, sort_keys=False)),
    ]


# --------------------------------------------------------------------------- 2. leaderboard


def leaderboard(r: RunResults) -> list[Block]:
    rows = []
    for row in r.leaderboard:
        name = row["checkpoint"]
        fig = r.figures(name)
        total = _total_component(r, name)
        rows.append([
            str(row["rank"]), BEST if name == r.best else "", name, count(row["step"]), count(fig["count"]),
            exact_with_ci(fig), pct(fig["token_accuracy"]), pct(fig["q_halt_accuracy"]), num(fig["mean_steps"], 2),
            num(fig["lm_loss"]), count(total["parameters"]) if total else UNDEFINED,
            mib(total["bytes"]) if total else UNDEFINED, num(_throughput(r.costs.get(name)), 1),
        ])
    blocks: list[Block] = [
        Text(f"Ranked by exact accuracy, then token accuracy; {BEST} marks the best. Accuracies in %, with the "
             "Wilson 95% interval of exact accuracy. Size: bytes of the checkpoint's tensors. examples/s: the "
             "checkpoint's examples over its actors' evaluation seconds (model load, data read and writes "
             "excluded)."),
        Table(["rank", "best", "checkpoint", "step", "examples", "exact % (95% CI)", "token %", "q-halt acc %",
               "mean steps", "lm loss", "parameters", "size (MiB)", "examples/s"], rows),
    ]
    if r.health is None:
        blocks.append(Text("Parameters and size: no health.json in this run (`hrm-eval report RUN --health` "
                           "measures it)."))
    series = _sweeps(r)
    if series:
        names = ", ".join(f"{s.label} ({len(s.steps)} steps)" for s in series)
        alt = "; ".join(
            f"{s.label}: " + ", ".join(f"step {st} exact {pct(e)}%" for st, e in zip(s.steps, s.exact))
            for s in series)
        blocks.append(Figure("accuracy-vs-step", plots.accuracy_vs_step(series),
                             f"Exact and token accuracy against training step. {alt}",
                             f"Exact accuracy (band: 95% CI) and token accuracy against training step for {names}; "
                             f"{BEST} best checkpoint of the run, ring: last step."))
    else:
        blocks.append(Text("Not a sweep: no training run here has two or more checkpoints with steps."))
    return blocks


def _sweeps(r: RunResults) -> list[plots.SweepSeries]:
    series = []
    for group in training_runs(r.manifest.checkpoints):
        figs = [r.figures(e.name) for e in group]
        if len(group) < 2 or any(e.step is None for e in group) or any(f["count"] == 0 for f in figs):
            continue
        best = next((i for i, e in enumerate(group) if e.name == r.best), None)
        series.append(plots.SweepSeries(
            label=_run_label(group[0]), steps=[e.step for e in group],
            exact=[f["exact_accuracy"] for f in figs], exact_low=[f["exact_ci_low"] for f in figs],
            exact_high=[f["exact_ci_high"] for f in figs], token=[f["token_accuracy"] for f in figs],
            best=best, last=len(group) - 1,
        ))
    return series


def _run_label(entry: CheckpointEntry) -> str:
    """A training run's name: the directory of its all_config.yaml."""
    return posixpath.basename(posixpath.dirname(entry.config_uri.split("?", 1)[0])) or entry.name


# --------------------------------------------------------------------------- 3. reasoning depth


def reasoning_depth(r: RunResults, other: RunResults | None = None) -> list[Block]:
    return _exact_by_step(r) + _halting(r) + _savings(r, other)


def _exact_by_step(r: RunResults) -> list[Block]:
    curves = {n: r.figures(n)["exact_accuracy_by_step"] for n in r.names
              if r.figures(n)["exact_accuracy_by_step"] is not None}
    if not curves:
        return [Text(f"Exact accuracy after each ACT step needs the fixed protocol; this run is {r.protocol}.")]
    depth = max(len(v) for v in curves.values())
    rows = [[n, *(pct(v[i]) if i < len(v) else "" for i in range(depth))] for n, v in curves.items()]
    shown = plotted(list(curves), [r.best])
    alt = "; ".join(f"{n}: " + ", ".join(pct(v) for v in curves[n]) for n in shown)
    return [
        Text("Exact accuracy (%) of the prediction after each ACT step, fixed protocol (all examples run every "
             "step)."),
        Table(["checkpoint", *(f"step {i + 1}" for i in range(depth))], rows,
              caption="Exact accuracy (%) after each ACT step", collapsed=len(rows) > COLLAPSE_ROWS),
        Figure("exact-by-act-step", plots.exact_by_act_step({n: curves[n] for n in shown}),
               f"Exact accuracy (%) after ACT steps 1 to {depth}: {alt}",
               "Exact accuracy after each ACT step." + _shown(shown, list(curves))),
    ]


def _halting(r: RunResults) -> list[Block]:
    histograms = {n: {int(s): c for s, c in r.figures(n)["steps_histogram"].items()} for n in r.names}
    if r.protocol == "fixed":
        depths = sorted({s for h in histograms.values() for s in h})
        return [Text(f"No halting-step histogram: the fixed protocol ran every example for "
                     f"{', '.join(map(str, depths))} ACT steps; it comes from an adaptive run.")]
    depth = max(s for h in histograms.values() for s in h)
    rows = [[n, num(r.figures(n)["mean_steps"], 2), *(count(h.get(s, 0)) for s in range(1, depth + 1))]
            for n, h in histograms.items()]
    shown = plotted(r.names, [r.best])
    alt = "; ".join(f"{n}: " + ", ".join(f"step {s} {histograms[n].get(s, 0)}" for s in range(1, depth + 1))
                    for n in shown)
    return [
        Table(["checkpoint", "mean steps", *(f"halted at {s}" for s in range(1, depth + 1))], rows,
              caption="Examples halting at each ACT step (adaptive protocol)", collapsed=len(rows) > COLLAPSE_ROWS),
        Figure("halting-steps", plots.halting_histogram({n: histograms[n] for n in shown}),
               f"Share of examples halting at each ACT step: {alt}",
               "Halting-step histogram, adaptive protocol (share of each checkpoint's examples)."
               + _shown(shown, r.names)),
    ]


def _savings(r: RunResults, other: RunResults | None) -> list[Block]:
    if other is None:
        return [Text(f"Forward steps saved by adaptive halting: this run has the {r.protocol} protocol only; "
                     "`hrm-eval report RUN --other-protocol RUN2` compares it with a run of the other.")]
    fixed, adaptive = (r, other) if r.protocol == "fixed" else (other, r)
    _check_pair(fixed, adaptive)
    by_hash = {c.content_hash: c.name for c in adaptive.manifest.checkpoints}
    rows = []
    for entry in fixed.manifest.checkpoints:
        twin = by_hash.get(entry.content_hash)
        if twin is None or entry.name not in fixed.costs or twin not in adaptive.costs:
            continue
        f_fig, a_fig = fixed.figures(entry.name), adaptive.figures(twin)
        f_cost, a_cost = fixed.costs[entry.name], adaptive.costs[twin]
        saved = 1 - a_cost.forward_steps / f_cost.forward_steps
        change = (a_fig["exact_accuracy"] - f_fig["exact_accuracy"]) if None not in (
            a_fig["exact_accuracy"], f_fig["exact_accuracy"]) else None
        rows.append([entry.name, count(f_cost.forward_steps), count(a_cost.forward_steps), pct(saved),
                     num(f_fig["mean_steps"], 2), num(a_fig["mean_steps"], 2), pct(f_fig["exact_accuracy"]),
                     pct(a_fig["exact_accuracy"]), UNDEFINED if change is None else f"{100 * change:+.2f}",
                     num(f_cost.eval_s, 2), num(a_cost.eval_s, 2)])
    if not rows:
        return [Text(f"Forward steps saved by adaptive halting: runs {fixed.manifest.run_id} and "
                     f"{adaptive.manifest.run_id} share no checkpoint (by content hash).")]
    return [
        Text(f"Adaptive halting against the fixed protocol on the same checkpoints (matched by content hash) and "
             f"data: fixed run {fixed.manifest.run_id}, adaptive run {adaptive.manifest.run_id}. Forward steps are "
             "the example-steps the engine computed; the accuracy change is adaptive − fixed, in points."),
        Table(["checkpoint", "forward steps, fixed", "forward steps, adaptive", "saved %", "steps/example, fixed",
               "steps/example, adaptive", "exact %, fixed", "exact %, adaptive", "exact change (points)",
               "eval seconds, fixed", "eval seconds, adaptive"], rows,
              caption="Forward steps saved by adaptive halting and the accuracy it cost"),
    ]


def _check_pair(fixed: RunResults, adaptive: RunResults) -> None:
    if fixed.protocol != "fixed" or adaptive.protocol != "adaptive":
        raise InputError(f"{adaptive.run}: both runs use the {fixed.protocol} protocol; the comparison needs one "
                         "fixed and one adaptive run")
    for run in (fixed, adaptive):
        if run.metrics is None:
            raise InputError(f"{run.run}: the run has no metrics (status {run.manifest.status})")
    a, b = fixed.manifest.dataset, adaptive.manifest.dataset
    if (a["content_hash"], a["split"]) != (b["content_hash"], b["split"]):
        raise InputError(f"{adaptive.run}: evaluated other data ({b['uri']} [{b['split']}], sha256 "
                         f"{b['content_hash'][:12]}…) than {fixed.run} ({a['uri']} [{a['split']}], sha256 "
                         f"{a['content_hash'][:12]}…)")


# --------------------------------------------------------------------------- 4. calibration


def calibration(r: RunResults) -> list[Block]:
    rows = [[n, count(r.figures(n)["count"]), pct(r.figures(n)["q_halt_accuracy"]), num(r.figures(n)["q_halt_auroc"]),
             num(r.figures(n)["q_halt_ece"])] for n in r.names]
    bins = [[n, f"{pct(b['low'], 0)}–{pct(b['high'], 0)}", count(b["count"]), pct(b["mean_confidence"]),
             pct(b["accuracy"])] for n in r.names for b in r.figures(n)["q_halt_reliability"] if b["count"]]
    shown = plotted(r.names, [r.best])
    alt = "; ".join(
        f"{n}: " + ", ".join(f"confidence {pct(b['mean_confidence'], 1)}% accuracy {pct(b['accuracy'], 1)}% "
                             f"(n={b['count']})" for b in r.figures(n)["q_halt_reliability"] if b["count"])
        for n in shown)
    return [
        Text("q-halt accuracy: (q_halt_logit ≥ 0) agrees with the example being exact. AUROC: how well "
             "sigmoid(q_halt) ranks exact above non-exact examples (undefined when all examples are one or the "
             "other). ECE: calibration error of sigmoid(q_halt) read as P(exact): |exact rate − mean confidence| per "
             "bin, weighted by the bin's examples, 10 equal-width bins."),
        Table(["checkpoint", "examples", "q-halt acc %", "AUROC", "ECE"], rows),
        Figure("reliability", plots.reliability_diagram({n: r.figures(n)["q_halt_reliability"] for n in shown}),
               f"Reliability diagram of sigmoid(q_halt): {alt}",
               "Reliability diagram: exact accuracy against mean sigmoid(q_halt) per bin (marker area: examples "
               "in the bin); the dotted diagonal is perfect calibration." + _shown(shown, r.names)),
        Table(["checkpoint", "bin (%)", "examples", "mean confidence %", "exact %"], bins,
              caption="Reliability bins (non-empty)", collapsed=True),
    ]


# --------------------------------------------------------------------------- 5. sets and tiers


WHOLE_SET = "(whole set)"


def sets_and_tiers(r: RunResults) -> list[Block]:
    first = r.metrics["checkpoints"][r.names[0]]["metrics"]
    if len(first["sets"]) < 2 and not first["tiers"]:
        only = next(iter(first["sets"]), UNDEFINED)
        return [Text(f"One set ({only}) and no tiers: the leaderboard's figures are the per-set figures.")]
    rows = []
    for n in r.names:
        fm = r.metrics["checkpoints"][n]["metrics"]
        for set_name, fig in fm["sets"].items():
            rows.append(_group_row(n, set_name, WHOLE_SET, fig))
            for tier, tier_fig in fm["tiers"].get(set_name, {}).items():
                rows.append(_group_row(n, set_name, tier, tier_fig))
    best = r.metrics["checkpoints"][r.best]["metrics"]
    groups = [(s, WHOLE_SET, f) for s, f in best["sets"].items()]
    groups += [(s, t, f) for s, tiers in best["tiers"].items() for t, f in tiers.items()]
    groups = [g for g in groups if g[2]["exact_accuracy"] is not None]
    labels = [s if t == WHOLE_SET else f"{s}/{t}" for s, t, _ in groups]
    alt = ", ".join(f"{label} {pct(f['exact_accuracy'])}%" for label, (_, _, f) in zip(labels, groups))
    return [
        Text("Per set, and per tier within a set (the dataset's tier column: e.g. Sudoku rating buckets, ARC "
             "subsets, a JSONL difficulty). Accuracies in %."),
        Table(["checkpoint", "set", "tier", "examples", "exact % (95% CI)", "token %", "q-halt acc %", "mean steps",
               "lm loss"], rows, caption="Figures per set and tier", collapsed=len(rows) > COLLAPSE_ROWS),
        Figure("sets-and-tiers", plots.group_bars(labels, [f["exact_accuracy"] for *_, f in groups],
                                                  [f["exact_ci_low"] for *_, f in groups],
                                                  [f["exact_ci_high"] for *_, f in groups], f"best: {r.best}"),
               f"Exact accuracy per set and tier of {r.best}: {alt}",
               f"Exact accuracy per set and tier of the best checkpoint ({r.best}), with 95% CI."),
    ]


def _group_row(name: str, set_name: str, tier: str, fig: dict[str, Any]) -> list[str]:
    return [name, set_name, tier, count(fig["count"]), exact_with_ci(fig), pct(fig["token_accuracy"]),
            pct(fig["q_halt_accuracy"]), num(fig["mean_steps"], 2), num(fig["lm_loss"])]


# --------------------------------------------------------------------------- 6. voting


def voting(r: RunResults) -> list[Block]:
    votes = r.votes()
    if not votes.get("arc") and not votes.get("tta"):
        return [Text("No voting in this run.")]
    return _arc(votes.get("arc") or {}) + _tta(votes.get("tta") or {})


def pass_ks(arc: dict[str, Any]) -> list[str]:
    ks = {k for entry in arc.values() for rule in entry["pass_at_k"].values() for k in rule}
    return sorted(ks, key=int)


def _arc(arc: dict[str, Any]) -> list[Block]:
    if not arc:
        return [Text("No ARC augmentation voting in this run.")]
    ks = pass_ks(arc)
    rows = []
    for name, entry in arc.items():
        for key, rule in (("trm", TRM_RULE), ("hrm", HRM_RULE)):
            scores = entry["pass_at_k"].get(key)
            if scores is not None:
                rows.append([name, rule, count(entry["puzzles"]), count(entry["test_inputs"]),
                             *(pct(scores.get(k)) if k in scores else "" for k in ks)])
    return [
        Text("ARC augmentation voting: predictions cropped, un-augmented and voted per (puzzle, test input); "
             "candidates ranked by votes, then mean sigmoid(q_halt). pass@k in %, under both scoring rules."),
        Table(["checkpoint", "scoring rule", "puzzles", "test inputs", *(f"pass@{k}" for k in ks)], rows,
              caption="ARC pass@k (%)"),
    ]


def _tta(tta: dict[str, Any]) -> list[Block]:
    if not tta:
        return [Text("No test-time augmentation in this run.")]
    rows = []
    for name, entry in tta.items():
        plain, voted = entry["plain"], entry["voted"]
        rows.append([name, count(entry["copies"]), entry["level"], count(plain["count"]),
                     pct(plain["exact_accuracy"]), pct(voted["exact_accuracy"]),
                     _points(voted["exact_accuracy"], plain["exact_accuracy"]), pct(plain["token_accuracy"]),
                     pct(voted["token_accuracy"]), _points(voted["token_accuracy"], plain["token_accuracy"])])
    return [
        Text("Test-time augmentation: each example evaluated in transformed copies, predictions mapped back and "
             "voted. Gains are voted − plain, in points."),
        Table(["checkpoint", "copies", "vote level", "examples", "exact %, plain", "exact %, voted",
               "exact gain (points)", "token %, plain", "token %, voted", "token gain (points)"], rows,
              caption="Test-time augmentation gains"),
    ]


def _points(after: float | None, before: float | None) -> str:
    return UNDEFINED if after is None or before is None else f"{100 * (after - before):+.2f}"


# --------------------------------------------------------------------------- 7. ensembles


def ensembles(r: RunResults) -> list[Block]:
    found = r.votes().get("ensembles") or []
    if not found:
        return [Text("No ensembles in this run.")]
    rows = []
    for e in found:
        test = e["mcnemar"]
        rows.append([e["name"], e["level"], ", ".join(e["members"]), count(e["count"]), pct(e["exact_accuracy"]),
                     pct(e["token_accuracy"]), e["best_member"], pct(e["best_member_exact_accuracy"]),
                     _points(e["exact_accuracy"], e["best_member_exact_accuracy"]), count(test["b"]),
                     count(test["c"]), "exact binomial" if test["statistic"] is None else num(test["statistic"], 3),
                     _p_value(test["p_value"])])
    return [
        Text("Checkpoint ensembles (majority vote over stored predictions) against their best member. Gain: "
             "ensemble − best member exact accuracy, in points. McNemar's paired test on per-example exactness: "
             "b = examples only the ensemble gets exact, c = only the best member; the statistic is the "
             "continuity-corrected χ², or the exact binomial test when b + c is small."),
        Table(["ensemble", "vote level", "members", "examples", "exact %", "token %", "best member",
               "best member exact %", "gain (points)", "b", "c", "McNemar statistic", "p-value"], rows,
              caption="Ensembles against their best member"),
    ]


def _p_value(p: float) -> str:
    return f"{p:.4f}" if p >= 1e-4 else f"{p:.2e}"


# --------------------------------------------------------------------------- 8. checkpoint health


def checkpoint_health(r: RunResults) -> list[Block]:
    if r.health is None:
        return [Text("No checkpoint health in this run (no health.json; `hrm-eval report RUN --health` measures it "
                     "from the checkpoints).")]
    checkpoints = r.health["checkpoints"]
    blocks: list[Block] = []
    layouts: dict[tuple, list[str]] = {}
    for name, entry in checkpoints.items():
        key = tuple((c["component"], c["tensors"], c["parameters"], c["bytes"], c["dtypes"])
                    for c in entry["components"])
        layouts.setdefault(key, []).append(name)
    for layout, names in layouts.items():
        which = f"all {len(names)} checkpoints" if len(layouts) == 1 else ", ".join(names)
        blocks.append(Table(["component", "tensors", "parameters", "bytes", "dtypes"],
                            [[c, count(t), count(p), count(b), d] for c, t, p, b, d in layout],
                            caption=f"Parameters per component ({which})"))
    bad = {n: _total(e)["nan"] + _total(e)["inf"] for n, e in checkpoints.items()}
    bad_names = [n for n, v in bad.items() if v]
    blocks.append(Text(f"NaN/Inf found in {len(bad_names)} checkpoint(s): {', '.join(bad_names)}." if bad_names
                       else f"No NaN or Inf in any of the {len(checkpoints)} checkpoints."))
    nan_rows = []
    for n, e in checkpoints.items():
        total = _total(e)
        worst = [c["component"] for c in e["components"] if c["component"] != "total" and (c["nan"] or c["inf"])]
        nan_rows.append([n, count(e["step"]), count(total["parameters"]), mib(total["bytes"]), count(total["nan"]),
                         count(total["inf"]), ", ".join(worst) or "none"])
    blocks.append(Table(["checkpoint", "step", "parameters", "MiB", "NaN", "Inf", "components with NaN/Inf"],
                        nan_rows, caption="NaN and Inf values per checkpoint", collapsed=len(nan_rows) > COLLAPSE_ROWS))
    return blocks + _drift(r)


def _total(entry: dict[str, Any]) -> dict[str, Any]:
    return next(c for c in entry["components"] if c["component"] == "total")


def _drift(r: RunResults) -> list[Block]:
    drift = r.health["drift"]
    if not drift:
        return [Text("No weight change measured: no training run here has two or more checkpoints.")]
    present = {c for d in drift for c in d["relative_change"]}
    components = [c for c in [*(name for name, _ in COMPONENTS), "other", "total"] if c in present]
    steps = {n: e["step"] for n, e in r.health["checkpoints"].items()}
    rows = [[d["from"], d["to"], *(sci(d["relative_change"].get(c)) for c in components)] for d in drift]
    blocks: list[Block] = [
        Text("Relative weight change ‖w_to − w_from‖ / ‖w_from‖ per component between consecutive checkpoints of "
             f"one training run ({UNDEFINED}: the component's norm is zero in the earlier checkpoint)."),
        Table(["from", "to", *components], rows, caption="Relative weight change between consecutive checkpoints",
              collapsed=len(rows) > COLLAPSE_ROWS),
    ]
    for group in training_runs(r.manifest.checkpoints):
        names = {e.name for e in group}
        steps_drift = [d for d in drift if d["to"] in names]
        if len(steps_drift) < 2:
            continue
        label = _run_label(group[0])
        xs = [steps[d["to"]] for d in steps_drift]
        series = {c: [d["relative_change"].get(c) for d in steps_drift] for c in components}
        log = plots.needs_log_scale(v for values in series.values() for v in values)
        scale = " (log scale)" if log else ""
        alt = "; ".join(f"step {x}: total {sci(d['relative_change'].get('total'))}" for x, d in zip(xs, steps_drift))
        blocks.append(Figure(f"weight-drift-{_slug(label)}", plots.weight_drift(xs, series, label, log),
                             f"Relative weight change per component of {label}{scale}: {alt}",
                             f"Relative weight change per component between consecutive checkpoints of {label}, "
                             f"plotted at the later checkpoint's step{scale}."))
    return blocks


def _slug(text: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "-_" else "-" for ch in text)


# --------------------------------------------------------------------------- 9. comparison


def comparison(r: RunResults) -> list[Block]:
    votes = r.votes()
    arc, tta = votes.get("arc") or {}, votes.get("tta") or {}
    gpu = any(c.peak_gpu_bytes for c in r.costs.values())
    columns = ["checkpoint", "parameters", "pass@1 (exact %)"]
    if tta:
        columns.append("pass@1 with TTA (exact %)")
    if arc:
        columns += ["ARC pass@1 % (TRM rule)", "ARC pass@2 % (TRM rule)", "ARC pass@2 % (HRM rule)"]
    columns += ["latency per puzzle (ms)", "examples/s", "peak actor RSS (MiB)"]
    if gpu:
        columns.append("peak actor GPU (MiB)")
    rows = []
    for row in r.leaderboard:
        name = row["checkpoint"]
        cost = r.costs.get(name)
        total = _total_component(r, name)
        cells = [name, count(total["parameters"]) if total else UNDEFINED, pct(r.figures(name)["exact_accuracy"])]
        if tta:
            cells.append(pct(tta[name]["voted"]["exact_accuracy"]) if name in tta else "")
        if arc:
            scores = arc.get(name, {}).get("pass_at_k", {})
            cells += [pct(scores.get("trm", {}).get("1")), pct(scores.get("trm", {}).get("2")),
                      pct(scores.get("hrm", {}).get("2"))] if name in arc else ["", "", ""]
        latency = 1000 * cost.eval_s / r.puzzles if cost and r.puzzles else None
        cells += [num(latency, 2), num(_throughput(cost), 1), mib(cost.peak_rss_bytes if cost else None)]
        if gpu:
            cells.append(mib(cost.peak_gpu_bytes if cost else None))
        rows.append(cells)
    batch = r.manifest.config["eval"]["batch_size"]
    return [
        Text(f"Only what this run measured, best first. Latency per puzzle: the checkpoint's actor evaluation "
             f"seconds over its {count(r.puzzles)} puzzles, in batches of {batch} (time per puzzle at that batch "
             "size, not single-puzzle latency). Peak memory: process peak of the actor(s) that evaluated the "
             "checkpoint, up to its last unit (it includes whatever those actors held before)."
             + (" Empty cells: that checkpoint was not voted on." if arc or tta else "")),
        Table(columns, rows, caption="Measured comparison"),
    ]
