"""`hrm-eval overlap DATA [--against OTHER] [--json]`: test examples that also occur in the
training data, exactly or up to the dataset's augmentations, and duplicates within the test
split (`hrm.audits.overlap`; docs/audits.md)."""

from __future__ import annotations

import argparse

from hrm.audits.overlap import FAMILIES, Groups, Matches, OverlapReport, audit_overlap

from jobs.cli import positive_int

SHOWN_IDS = 5  # ids printed per row of the table; --json has them all


def configure(parser: argparse.ArgumentParser) -> None:
    parser.description = (
        "Audit a dataset's test split for overlap with its train split (or with every split of OTHER): test "
        "examples whose input, and whose input with its label, occur there exactly or up to the dataset's own "
        "augmentations (Sudoku: digit relabelling, band/stack and row/column shuffles, transpose; ARC: dihedral "
        "transforms, colour permutations and translation; mazes: dihedral transforms; other data: exact only), "
        "and groups of test examples that repeat each other. Matching is by canonical forms, not pairwise search."
    )
    parser.add_argument("data", metavar="DATA", help="a dataset with a test split (local or s3://)")
    parser.add_argument("--against", metavar="OTHER_DATA",
                        help="match against every split of this dataset instead of DATA's train split")
    parser.add_argument("--family", choices=("auto", *FAMILIES), default="auto",
                        help="which augmentations to canonicalise (default: from the dataset's recorded kind, "
                             "else its shapes)")
    parser.add_argument("--json", action="store_true", help="print one JSON object with every example id")
    parser.add_argument("--workers", type=positive_int, default=None, metavar="N",
                        help="processes that read and key the chunks (default: the usable cores; 1: this process "
                             "alone)")


def run(args: argparse.Namespace) -> int:
    report = audit_overlap(args.data, args.against, family=args.family, workers=args.workers)
    if args.json:
        print(report.model_dump_json())
    else:
        print_report(report)
    return 0


def print_report(report: OverlapReport) -> None:
    from cluster.progress import print_metrics_table

    total = report.test_examples

    def share(count: int) -> str:
        return f"{count / total:.2%}" if total else "n/a"

    def shown(ids: list) -> str:
        text = ", ".join(ids[:SHOWN_IDS])
        return text + (f", … ({len(ids) - SHOWN_IDS} more)" if len(ids) > SHOWN_IDS else "")

    def match_row(what: str, matches: Matches) -> list[str]:
        return [what, f"{matches.count:,}", share(matches.count), shown(matches.ids)]

    def group_row(what: str, groups: Groups) -> list[str]:
        return [what, f"{groups.examples:,} in {groups.groups:,} groups", share(groups.examples),
                shown([joined(group) for group in groups.ids])]

    def joined(group: list[str]) -> str:
        return "+".join(group[:SHOWN_IDS]) + ("+…" if len(group) > SHOWN_IDS else "")

    exact, augmented, duplicates = report.exact_in_train, report.augmented_in_train, report.duplicates_within_test
    rows = [
        match_row("input exactly in train", exact.input),
        match_row("input up to augmentation only", augmented.input),
        match_row("input+label exactly in train", exact.input_label),
        match_row("input+label up to augmentation only", augmented.input_label),
        group_row("duplicates within test (input)", duplicates.input),
        group_row("duplicates within test (input+label)", duplicates.input_label),
    ]
    print_metrics_table(f"{report.dataset}: {total:,} test examples against {report.reference} "
                        f"({report.reference_examples:,} examples)",
                        ["overlap", "test examples", "share", "example ids"], rows)
    print(f"canonicalisation: {report.canonicalisation} [{report.family}, from {report.family_source}]; "
          f"{report.seconds:.1f} s, {report.workers} process(es)")
