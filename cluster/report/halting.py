"""The report's sections on the ACT loop: accuracy after each step, when examples halt, what
adaptive halting saves, and how well the q-halt head is calibrated."""

from __future__ import annotations

from hrm.errors import InputError
from hrm.eval.metrics import LOGIT_SCALE

from cluster.report import plots
from cluster.report.document import UNDEFINED, Block, Figure, Table, Text
from cluster.report.format import COLLAPSE_ROWS, count, num, pct, plotted, sci, shown_note
from cluster.report.results import RunResults

# --------------------------------------------------------------------------- 3. reasoning depth


def reasoning_depth(r: RunResults, other: RunResults | None = None) -> list[Block]:
    return _exact_by_step(r) + _halting(r) + _savings(r, other)


def _exact_by_step(r: RunResults) -> list[Block]:
    curves = {n: r.figures(n)["exact_accuracy_by_step"] for n in r.names
              if r.figures(n)["exact_accuracy_by_step"] is not None}
    if not curves:
        return [Text(f"Exact accuracy after each ACT step needs the fixed protocol; this run is "
                     f"{r.protocol or 'not'}.")]
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
               "Exact accuracy after each ACT step." + shown_note(shown, list(curves))),
    ]


def _halting(r: RunResults) -> list[Block]:
    if r.protocol is None:
        return [Text("No halting-step histogram: which protocol ran is in the run's manifest, which it lacks.")]
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
               + shown_note(shown, r.names)),
    ]


def _savings(r: RunResults, other: RunResults | None) -> list[Block]:
    if other is None:
        return [Text(f"Forward steps saved by adaptive halting: this run has the {r.protocol or 'one'} protocol "
                     "only; `hrm-eval report RUN --other-protocol RUN2` compares it with a run of the other.")]
    fixed, adaptive = (r, other) if r.protocol == "fixed" else (other, r)
    _check_pair(fixed, adaptive)
    by_file = {(c.uri, c.version): c.name for c in adaptive.evaluated}
    rows = []
    for entry in fixed.evaluated:
        twin = by_file.get((entry.uri, entry.version))
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
                     f"{adaptive.manifest.run_id} share no checkpoint (the same file at the same version).")]
    return [
        Text(f"Adaptive halting against the fixed protocol on the same checkpoints (the same files at the same versions) and "
             f"data: fixed run {fixed.manifest.run_id}, adaptive run {adaptive.manifest.run_id}. Forward steps are "
             "the example-steps the engine computed; the accuracy change is adaptive − fixed, in points."),
        Table(["checkpoint", "forward steps, fixed", "forward steps, adaptive", "saved %", "steps/example, fixed",
               "steps/example, adaptive", "exact %, fixed", "exact %, adaptive", "exact change (points)",
               "eval seconds, fixed", "eval seconds, adaptive"], rows,
              caption="Forward steps saved by adaptive halting and the accuracy it cost"),
    ]


def _check_pair(fixed: RunResults, adaptive: RunResults) -> None:
    for run in (fixed, adaptive):
        if run.partial is not None:
            raise InputError(f"{run.run}: the run is partial ({run.partial.why}); comparing protocols needs two "
                             "complete runs")
    if fixed.protocol != "fixed" or adaptive.protocol != "adaptive":
        raise InputError(f"{adaptive.run}: both runs use the {fixed.protocol} protocol; the comparison needs one "
                         "fixed and one adaptive run")
    a, b = fixed.manifest.dataset, adaptive.manifest.dataset
    if (a["content_hash"], a["split"]) != (b["content_hash"], b["split"]):
        raise InputError(f"{adaptive.run}: evaluated other data ({b['uri']} [{b['split']}], sha256 "
                         f"{b['content_hash'][:12]}…) than {fixed.run} ({a['uri']} [{a['split']}], sha256 "
                         f"{a['content_hash'][:12]}…)")




# --------------------------------------------------------------------------- 4. calibration


def calibration(r: RunResults) -> list[Block]:
    rows = [[n, count(r.figures(n)["count"]), pct(r.figures(n)["q_halt_accuracy"]), num(r.figures(n)["q_halt_auroc"]),
             sci(r.figures(n)["q_halt_auroc_bound"]), num(r.figures(n)["q_halt_ece"])] for n in r.names]
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
             f"other); it is computed over q_halt logits in bins of 1/{LOGIT_SCALE} and lies within ± bound of the value "
             "over the unbinned logits (the bound counts the pairs of an exact and a non-exact example sharing a "
             "bin). ECE: calibration error of sigmoid(q_halt) read as P(exact): |exact rate − mean confidence| per "
             "bin, weighted by the bin's examples, 10 equal-width bins."),
        Table(["checkpoint", "examples", "q-halt acc %", "AUROC", "± bound", "ECE"], rows),
        Figure("reliability", plots.reliability_diagram({n: r.figures(n)["q_halt_reliability"] for n in shown}),
               f"Reliability diagram of sigmoid(q_halt): {alt}",
               "Reliability diagram: exact accuracy against mean sigmoid(q_halt) per bin (marker area: examples "
               "in the bin); the dotted diagonal is perfect calibration." + shown_note(shown, r.names)),
        Table(["checkpoint", "bin (%)", "examples", "mean confidence %", "exact %"], bins,
              caption="Reliability bins (non-empty)", collapsed=True),
    ]
