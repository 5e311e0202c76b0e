"""The report's checkpoint health section: parameters per component, NaN/Inf, and weight
drift between consecutive checkpoints of a training run."""

from __future__ import annotations

from typing import Any

from hrm.checkpoint.health import COMPONENTS

from cluster.report import plots
from cluster.report.document import UNDEFINED, Block, Figure, Table, Text
from cluster.report.format import COLLAPSE_ROWS, count, mib, run_label, sci
from cluster.report.results import RunResults
from cluster.results.health import training_runs

# --------------------------------------------------------------------------- 8. checkpoint health

HOW_TO_HEALTH = "`hrm-eval report RUN --health` measures it from the checkpoints"
NO_HEALTH = "measuring it needs the checkpoints the manifest names, and this run has none"


def checkpoint_health(r: RunResults) -> list[Block]:
    if r.health is None:
        how = HOW_TO_HEALTH if r.manifest else NO_HEALTH
        return [Text(f"No checkpoint health in this run (no health.json; {how}).")]
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
    for group in training_runs(r.evaluated):
        names = {e.name for e in group}
        steps_drift = [d for d in drift if d["to"] in names]
        if len(steps_drift) < 2:
            continue
        label = run_label(group[0])
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
