"""The report's text checks: per checkpoint, the rates of the checkers (`hrm.checks`) on its
decoded predictions, per kind and tier, and what the failures were."""

from __future__ import annotations

from hrm.data.parquet import ParquetDataset
from hrm.data.reader import open_dataset
from hrm.errors import InputError

from cluster.report.document import Block, Code, Table, Text
from cluster.report.format import count, pct
from cluster.report.results import RunResults
from cluster.results.text_checks import first_of_each_status

SHOWN_CHARS = 4_000  # of one example's completion: a runaway completion must not swamp the report
RATE_NAMES = {"syntax_valid": "parses %", "compiles": "compiles %", "passes_tests": "passes tests %",
              "tool_chain_valid": "chain valid %", "execution_success": "executes %", "passed": "passed %"}


def text_checks(r: RunResults) -> list[Block]:
    """For a run whose metrics hold text checks (a text dataset that names tasks)."""
    found = r.metrics["text"]
    rows, statuses = [], []
    for name, summary in found["checkpoints"].items():
        for row in summary["by_kind_tier"]:
            rates = row["rates"]
            rows.append([name, row["kind"], row["tier"] or "", count(row["completions"]),
                         *(pct(rates.get(key)) if key in rates else "" for key in RATE_NAMES),
                         pct((row["pass_at_k"].get("1") or {}).get("estimate"))])
        statuses.append([name, count(summary["completions"]),
                         ", ".join(f"{status} {n}" for status, n in summary["statuses"].items())])
    return [
        Text("Every decoded prediction whose example names a task was checked against it: Python run against its "
             "tests in the sandbox (docs/sandbox.md), tool chains validated and replayed on the mock environment "
             "(docs/tool-chains.md), strings compared. Rates in % of the completions where the check applies; "
             "pass@1 averaged over tasks." + _lossy(r)),
        Table(["checkpoint", "kind", "tier", "completions", *RATE_NAMES.values(), "pass@1 %"], rows,
              caption="Text checks per kind and tier"),
        Table(["checkpoint", "completions", "outcomes"], statuses, caption="Outcomes of the checks"),
        *_examples(r),
    ]


def _examples(r: RunResults) -> list[Block]:
    """The best checkpoint's first completion of each outcome, decoded, as the checks saw it."""
    best = r.best
    summary = r.metrics["text"]["checkpoints"].get(best) if best else None
    if not summary:
        return []
    blocks: list[Block] = [Text(f"Examples: the first completion of {best} (the leaderboard's best) with each outcome, "
                                "in dataset order, decoded as the checks read it.")]
    for example in first_of_each_status(r.run, best, summary["statuses"]):
        where = f"{example['set']}/{example['example_id']}, task {example['task_id']} ({example['kind']}"
        where += f", {example['tier']})" if example["tier"] else ")"
        outcome = example["status"] + (f": {example['message'].splitlines()[0]}" if example["message"] else "")
        text = example["completion"]
        if len(text) > SHOWN_CHARS:
            text = text[:SHOWN_CHARS] + f"\n… ({len(example['completion']) - SHOWN_CHARS:,} more characters)"
        blocks.append(Code(f"{where}: {outcome}", text))
    return blocks


def _lossy(r: RunResults) -> str:
    """What a lossy tokenizer dropped, as the conversion counted it (dataset.json's summary)."""
    try:
        dataset = open_dataset(r.manifest.config.dataset.uri)
    except InputError:
        return " (The dataset can no longer be read, so whether its tokenizer lost words is not shown.)"
    summary = dataset.index.summary if isinstance(dataset, ParquetDataset) else {}
    if not summary.get("lossy"):
        return ""
    missing = summary.get("words_without_token")
    return (f" The dataset's tokenizer is lossy: {count(missing)} word(s) of its prompts and completions had no "
            "token, so neither the model nor these checks ever saw them." if missing is not None else
            " The dataset's tokenizer is lossy: the decoded text is only what it kept.")
