"""Section 1 of the report: what ran, on what, how long it took and what it cost."""

from __future__ import annotations

import yaml

from cluster.config import limited_to
from cluster.report.document import UNDEFINED, Block, Code, Table
from cluster.report.format import COLLAPSE_ROWS, count, mib, num, seconds
from cluster.report.results import RunResults

# --------------------------------------------------------------------------- 1. run summary


def run_summary(r: RunResults) -> list[Block]:
    m = r.manifest
    cfg = m.config
    ev, cl = cfg.eval, cfg.cluster
    t = m.timings
    hw = m.hardware
    driver = hw.get("driver", {})
    counts = m.counts
    steps = str(ev.steps or "halt_max_steps")
    if ev.protocol == "fixed":
        here = ""
        if not ev.steps and r.metrics is not None:  # every example ran exactly that many: measured
            here = f" ({', '.join(sorted({s for n in r.names for s in r.figures(n)['steps_histogram']}, key=int))} here)"
        protocol = f"fixed: every example runs all {steps} ACT steps{here}, as the reference evaluator does"
    else:
        protocol = f"adaptive: an example halts once q_halt > q_continue, after {ev.min_steps} to {steps} ACT steps"
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
        ["dataset", f"{m.dataset['uri']} [{m.dataset['split']}]"
                    + (f", {look}" if (look := limited_to(cfg.dataset.limit, cfg.dataset.sample_seed)) else "")],
        ["dataset sets", ", ".join(m.dataset["sets"])],
        ["dataset examples", count(m.dataset["examples"])],
        ["puzzles", count(r.puzzles)],
        ["dataset sha256", m.dataset["content_hash"]],
        ["protocol", protocol],
        ["batch size / dtype", f"{ev.batch_size} / {ev.dtype or 'each checkpoint’s forward_dtype'}"],
        ["device", ", ".join(r.devices) or UNDEFINED],
        ["actors", f"{actors_text(cl.actor_range)} ({cl.cpus_per_actor} CPU, {cl.gpus_per_actor} GPU, "
                   f"torch threads {cl.torch_threads or 'default'} each)"],
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
        ["checkpoint", "family", "step", "units", "examples", "loads", "version", "uri"],
        [[c.name, c.family or UNDEFINED, count(c.step), count(c.units), count(c.examples), count(c.loads),
          c.version or UNDEFINED, c.uri] for c in m.checkpoints],
        caption="Checkpoints, in plan order",
        collapsed=len(m.checkpoints) > COLLAPSE_ROWS,
    )
    failed = [[c.name, c.error] for c in m.checkpoints if c.error is not None]
    return [
        Table(["item", "value"], rows),
        *committed_so_far(r),
        *([Table(["checkpoint", "why"], failed, caption="Failed checkpoints: their units were given up and they "
                 "have no figures in this report" + ("" if r.partial else "; every other checkpoint was evaluated "
                                                     "in full"))] if failed else []),
        checkpoints,
        Code("The run config (as validated)", yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False)),
    ]


def actors_text(actor_range: tuple[int, int]) -> str:
    low, high = actor_range
    return str(low) if low == high else f"{low} to {high}"


def committed_so_far(r: RunResults) -> list[Block]:
    """Per checkpoint, what a partial run committed (against its plan when known): what its
    figures cover."""
    p = r.partial
    if p is None:
        return []
    names = [c.name for c in r.manifest.checkpoints] if r.manifest else sorted(p.units)
    planned = p.planned_units is not None
    rows = []
    for name in names:
        figures = r.figures(name) if name in r.names else None
        rows.append([name, count(p.units.get(name, 0)), *([count(p.planned_units.get(name, 0))] if planned else []),
                     count(figures["count"]) if figures else "none",
                     *([count(p.planned_examples)] if planned else [])])
    columns = ["checkpoint", "units committed", *(["units planned"] if planned else []), "examples in the figures",
               *(["examples planned"] if planned else [])]
    return [Table(columns, rows, caption="What the figures of this partial report cover (units include "
                                         "test-time-augmentation copies; examples are those of the plain data)",
                  collapsed=len(rows) > COLLAPSE_ROWS)]


def stopped_summary(r: RunResults) -> list[Block]:
    """The summary of a run that stopped before writing its manifest: only what the
    committed unit records say (no config, no plan, no timings of the run)."""
    costs = r.costs.values()
    records = [
        ["run", r.run],
        ["status", r.partial.why],
        ["units committed", count(sum(r.partial.units.values()))],
        ["examples evaluated (all units)", count(sum(c.examples for c in costs))],
        ["forward steps", count(sum(c.forward_steps for c in costs))],
        ["actor evaluation seconds", seconds(sum(c.eval_s for c in costs))],
        ["device", ", ".join(r.devices) or UNDEFINED],
        ["peak memory: actor RSS (MiB)", mib(max((c.peak_rss_bytes for c in costs if c.peak_rss_bytes), default=None))],
        ["peak memory: actor GPU (MiB)", mib(max((c.peak_gpu_bytes for c in costs if c.peak_gpu_bytes), default=None))],
    ]
    return [Table(["item", "value"], records), *committed_so_far(r)]
