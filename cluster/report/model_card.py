"""The report's model card: the best checkpoint's figures as this run measured them, and,
apart, the figures about other systems that the user quoted with their sources."""

from __future__ import annotations

from cluster.report.document import Block, Table, Text
from cluster.report.format import UNDEFINED, count, mib, num, pct
from cluster.report.results import RunResults
from cluster.results.quoted import read_quoted_figures


def model_card(r: RunResults) -> list[Block]:
    """For a run whose metrics hold the card (every run that finished)."""
    card = r.metrics["model_card"]
    rows = [["checkpoint", f"{card['checkpoint']} (step {card['step']}, {card['family']})"],
            ["parameters", count(card["parameters"])],
            [f"exact accuracy % ({count(card['examples'])} examples)", pct(card["exact_accuracy"])],
            ["pass@1 % (text checks)", pct(card["pass_at_1"]) if card["pass_at_1"] is not None else UNDEFINED],
            ["examples/s in this run (actors' evaluation time)", num(card["examples_per_s"], 1)]]
    for label, timed in card["latency"].items():
        rows.append([f"latency per call, {timed['examples']} example(s), p50 / p95 (s; {timed['calls']} timed calls)",
                     f"{timed['p50_s']:.4f} / {timed['p95_s']:.4f}"])
    rows += [["peak memory of its actors (MiB)", mib(card["peak_rss_bytes"]) if card["peak_rss_bytes"] else UNDEFINED],
             ["peak GPU memory (MiB)", mib(card["peak_gpu_bytes"]) if card["peak_gpu_bytes"] else UNDEFINED],
             ["device, protocol", f"{card['device']}, {card['protocol']}"]]
    blocks: list[Block] = [
        Text("Measured in this run: the best checkpoint's parameters (counted from its tensors), accuracy, "
             "throughput and peak memory (from its units), and latency (one task after the run, on the actors' "
             "kind of device, timing the engine on one example and on one batch of the run's batch size after a "
             "warm-up call)."),
        Table(["figure", "measured"], rows, caption="Model card (measured)"),
    ]
    quoted_file = r.manifest.config.output.quoted_figures if r.manifest else None
    if quoted_file:
        quoted = read_quoted_figures(quoted_file)
        blocks += [
            Text(f"Quoted, not measured: figures about other systems as their sources state them, from {quoted_file}. "
                 "They were not measured by this run and may use other data, settings or hardware."),
            Table(["system", "figure", "value (quoted)", "source"],
                  [[q["system"], q["figure"], q["value"], q["source"]] for q in quoted], caption="Quoted figures"),
        ]
    return blocks
