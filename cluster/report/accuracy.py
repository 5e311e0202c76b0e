"""The report's accuracy sections: the leaderboard (and accuracy against training step), figures
per set and tier, and the measured comparison of checkpoints."""

from __future__ import annotations

from typing import Any

from cluster.report import plots
from cluster.report.document import UNDEFINED, Block, Figure, Table, Text
from cluster.report.format import (
    BEST,
    COLLAPSE_ROWS,
    count,
    exact_with_ci,
    mib,
    num,
    p_value,
    pct,
    points,
    run_label,
    throughput,
    token_with_ci,
    total_component,
)
from cluster.report.health import HOW_TO_HEALTH, NO_HEALTH
from cluster.report.results import RunResults
from cluster.results.health import training_runs
from cluster.results.paired import SIGNIFICANCE

# --------------------------------------------------------------------------- 2. leaderboard


def leaderboard(r: RunResults) -> list[Block]:
    rows = []
    for row in r.leaderboard:
        name = row["checkpoint"]
        fig = r.figures(name)
        total = total_component(r, name)
        rows.append([
            str(row["rank"]), BEST if name == r.best else "", name, count(row["step"]), count(fig["count"]),
            exact_with_ci(fig), token_with_ci(fig), pct(fig["q_halt_accuracy"]), num(fig["mean_steps"], 2),
            num(fig["lm_loss"]), count(total["parameters"]) if total else UNDEFINED,
            mib(total["bytes"]) if total else UNDEFINED, num(throughput(r.costs.get(name)), 1),
            _paired(row, "p_vs_best"), _paired(row, "p_vs_previous"),
        ])
    blocks: list[Block] = [
        Text(f"Ranked by exact accuracy, then token accuracy; {BEST} marks the best. Accuracies in %, with the "
             "Wilson 95% interval of exact accuracy and the normal 95% interval of token accuracy (a mean over "
             "examples, whose tokens are not independent: the examples are the units). Size: bytes of the checkpoint's tensors. examples/s: the "
             "checkpoint's examples over its actors' evaluation seconds (model load, data read and writes "
             "excluded). p vs best, p vs previous step: McNemar's paired test of exact answers on the same examples "
             "against the best checkpoint and against the previous step of the same training run (exact binomial "
             f"below 25 discordant examples); p ≥ 0.05 marked ≈: not distinguishable from it on these examples "
             f"({_indistinguishable(r)})."
             + (" Partial: each checkpoint is ranked on what it committed, which may be other examples "
                "than another's." if r.partial else "")),
        Table(["rank", "best", "checkpoint", "step", "examples", "exact % (95% CI)", "token % (95% CI)", "q-halt acc %",
               "mean steps", "lm loss", "parameters", "size (MiB)", "examples/s", "p vs best", "p vs previous step"],
              rows),
    ]
    blocks += ablations(r)
    if r.health is None:
        how = HOW_TO_HEALTH if r.manifest else NO_HEALTH
        blocks.append(Text(f"Parameters and size: no health.json in this run ({how})."))
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


ABLATION_NAMES = {"blank_puzzle_ids": "blank identifiers", "shuffled_puzzle_ids": "shuffled identifiers"}


def ablations(r: RunResults) -> list[Block]:
    """Each checkpoint's exact answers with its puzzle identifiers as trained and ablated."""
    found = (r.metrics or {}).get("ablations")
    if not found:
        return []
    rows = []
    for row in r.leaderboard:
        for kind, entry in found.get(row["checkpoint"], {}).items():
            test = entry["vs_plain"]
            n = entry["examples"]
            rows.append([row["checkpoint"], ABLATION_NAMES.get(kind, kind), count(n),
                         pct(entry["exact_plain"] / n if n else None), pct(entry["exact_ablated"] / n if n else None),
                         points(entry["exact_ablated"] / n if n else None, entry["exact_plain"] / n if n else None),
                         count(test["only_this"]), count(test["only_against"]), p_value(test["p_value"])])
    return [
        Text("Puzzle-identifier ablation: every checkpoint evaluated again with its puzzle identifiers blanked "
             "(the blank identifier for every example) or shuffled (each puzzle given another's), on the same "
             "examples. A model that solves the puzzle in front of it keeps its accuracy; one that recalls puzzles "
             "by their learned embedding loses it. A model trained with a single identifier (or without a puzzle "
             "embedding) cannot change. Exact % of the examples; McNemar's paired test of ablated against plain."),
        Table(["checkpoint", "ablation", "examples", "exact % as trained", "exact % ablated", "change (points)",
               "right only ablated", "right only as trained", "p-value"], rows, caption="Puzzle-identifier ablation"),
    ]


def _paired(row: dict[str, Any], key: str) -> str:
    p = row.get(key)
    return UNDEFINED if p is None else ("≈ " if p >= SIGNIFICANCE else "") + p_value(p)


def _indistinguishable(r: RunResults) -> str:
    """Which checkpoints are not distinguishable from the best, in words."""
    tied = [row["checkpoint"] for row in r.leaderboard if row.get("indistinguishable_from_best")
            and row["checkpoint"] != r.best]
    if not any(row.get("p_vs_best") is not None for row in r.leaderboard):
        return "no paired test here: one checkpoint, or a run that did not finish"
    return (f"{len(tied)} checkpoint(s) besides the best: {', '.join(tied)}" if tied
            else "every other checkpoint is distinguishable from the best")


def _sweeps(r: RunResults) -> list[plots.SweepSeries]:
    series = []
    for group in training_runs(r.evaluated):
        figs = [r.figures(e.name) for e in group]
        if len(group) < 2 or any(e.step is None for e in group) or any(f["count"] == 0 for f in figs):
            continue
        best = next((i for i, e in enumerate(group) if e.name == r.best), None)
        series.append(plots.SweepSeries(
            label=run_label(group[0]), steps=[e.step for e in group],
            exact=[f["exact_accuracy"] for f in figs], exact_low=[f["exact_ci_low"] for f in figs],
            exact_high=[f["exact_ci_high"] for f in figs], token=[f["token_accuracy"] for f in figs],
            best=best, last=len(group) - 1,
        ))
    return series


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
        total = total_component(r, name)
        cells = [name, count(total["parameters"]) if total else UNDEFINED, pct(r.figures(name)["exact_accuracy"])]
        if tta:
            cells.append(pct(tta[name]["voted"]["exact_accuracy"]) if name in tta else "")
        if arc:
            scores = arc.get(name, {}).get("pass_at_k", {})
            cells += [pct(scores.get("trm", {}).get("1")), pct(scores.get("trm", {}).get("2")),
                      pct(scores.get("hrm", {}).get("2"))] if name in arc else ["", "", ""]
        latency = 1000 * cost.eval_s / r.puzzles if cost and r.puzzles else None
        cells += [num(latency, 2), num(throughput(cost), 1), mib(cost.peak_rss_bytes if cost else None)]
        if gpu:
            cells.append(mib(cost.peak_gpu_bytes if cost else None))
        rows.append(cells)
    if r.puzzles is None:  # a partial run: its checkpoints were evaluated on different parts of the data
        latency = f"Latency per puzzle: {UNDEFINED}, a partial run's checkpoints did not all see the same puzzles."
    else:
        latency = (f"Latency per puzzle: the checkpoint's actor evaluation seconds over its {count(r.puzzles)} "
                   f"puzzles, in batches of {r.manifest.config.eval.batch_size} (time per puzzle at that batch "
                   "size, not single-puzzle latency).")
    return [
        Text(f"Only what this run measured, best first. {latency} Peak memory: process peak of the actor(s) that "
             "evaluated the checkpoint, up to its last unit (it includes whatever those actors held before)."
             + (" Empty cells: that checkpoint was not voted on." if arc or tta else "")),
        Table(columns, rows, caption="Measured comparison"),
    ]
