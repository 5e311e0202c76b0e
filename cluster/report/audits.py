"""The report's audits: what the overlap audit (hrm.audits.overlap) found in the test split."""

from __future__ import annotations

from cluster.report.document import Block, Table, Text
from cluster.report.format import count
from cluster.report.results import RunResults

IDS_SHOWN = 10


def audits(r: RunResults) -> list[Block]:
    """For a run whose metrics hold the overlap audit (`audits: [overlap]`)."""
    found = r.metrics["audits"]["overlap"]
    rows = []
    for label, key in (("exactly in train", "exact_in_train"), ("in train up to augmentation", "augmented_in_train")):
        for level, what in (("input", "input"), ("input_label", "input and label")):
            entry = found[key][level]
            shown = ", ".join(entry["ids"][:IDS_SHOWN]) + (" …" if len(entry["ids"]) > IDS_SHOWN else "")
            rows.append([label, what, count(entry["count"]), shown])
    for level, what in (("input", "input"), ("input_label", "input and label")):
        entry = found["duplicates_within_test"][level]
        shown = "; ".join(" = ".join(group) for group in entry["ids"][:IDS_SHOWN])
        rows.append(["duplicated within test", what, f"{count(entry['examples'])} in {count(entry['groups'])} groups",
                     shown])
    return [
        Text(f"Overlap audit of the {count(found['test_examples'])} test examples against {found['reference']} "
             f"({count(found['reference_examples'])} examples): {found['family']} data ({found['family_source']}); "
             f"{found['canonicalisation']} A test example found in train measures recall, not generalisation."),
        Table(["found", "matching", "test examples", f"ids (first {IDS_SHOWN})"], rows, caption="Overlap audit"),
    ]
