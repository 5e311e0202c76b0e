"""Two runs set side by side: per checkpoint the change in accuracy and whether it is more
than chance, by McNemar's test on the same examples (`cluster.results.paired`).

A comparison is only meaningful on the same examples: both runs must have evaluated the same
dataset (its content hash), split and sets, or it is refused naming what differs. Evaluation
settings may differ (that is usually what is being compared: bfloat16 against float32, adaptive
against fixed halting, a new version of the evaluator) and are listed.

Checkpoints are paired by name, then the rest by storage version (the same file under
another name). The document (`compare_runs`) is JSON.
"""

from __future__ import annotations

from typing import Any

from hrm.errors import InputError

from cluster.manifest import Manifest, read_manifest
from cluster.results.metrics import read_metrics
from cluster.results.paired import compare, exact_flags

COMPARE_FORMAT = "hrm-eval/compare"
COMPARE_VERSION = 1


def compare_runs(uri_a: str, uri_b: str) -> dict[str, Any]:
    manifest_a, manifest_b = read_manifest(uri_a), read_manifest(uri_b)
    check_same_examples(uri_a, manifest_a, uri_b, manifest_b)
    metrics_a, metrics_b = read_metrics(uri_a), read_metrics(uri_b)
    pairs, only_a, only_b = pair_checkpoints(manifest_a, manifest_b)
    rows = []
    for name_a, name_b, matched_by in pairs:
        test = compare(exact_flags(uri_b, name_b), exact_flags(uri_a, name_a), (f"{uri_b} {name_b}", f"{uri_a} {name_a}"))
        figures_a = metrics_a["checkpoints"][name_a]["metrics"]["all"]
        figures_b = metrics_b["checkpoints"][name_b]["metrics"]["all"]
        rows.append({
            "a": name_a, "b": name_b, "matched_by": matched_by,
            "exact_a": figures_a["exact_accuracy"], "exact_b": figures_b["exact_accuracy"],
            "exact_difference": figures_b["exact_accuracy"] - figures_a["exact_accuracy"],
            "token_a": figures_a["token_accuracy"], "token_b": figures_b["token_accuracy"],
            "examples": figures_a["count"],
            "only_a": test.only_against, "only_b": test.only_this,  # exactly right in one run only
            "p_value": test.p_value, "method": test.method, "significant": test.significant,
        })
    return {
        "format": COMPARE_FORMAT, "version": COMPARE_VERSION, "a": uri_a, "b": uri_b,
        "dataset": {"uri_a": manifest_a.dataset["uri"], "uri_b": manifest_b.dataset["uri"],
                    "content_hash": manifest_a.dataset["content_hash"], "split": manifest_a.config.dataset.split},
        "settings_compared": settings_difference(manifest_a, manifest_b),
        "pairs": rows, "only_in_a": only_a, "only_in_b": only_b,
        "significant": sum(row["significant"] for row in rows),
    }


def check_same_examples(uri_a: str, a: Manifest, uri_b: str, b: Manifest) -> None:
    hash_a, hash_b = a.dataset["content_hash"], b.dataset["content_hash"]
    if hash_a != hash_b:
        raise InputError(f"{uri_b}: its dataset ({b.dataset['uri']}, sha256 {hash_b[:16]}…) is not that of {uri_a} "
                         f"({a.dataset['uri']}, sha256 {hash_a[:16]}…): a paired comparison needs the same examples")
    for key in ("split", "sets"):
        value_a, value_b = getattr(a.config.dataset, key), getattr(b.config.dataset, key)
        if value_a != value_b:
            raise InputError(f"{uri_b}: dataset.{key} is {value_b!r} but {value_a!r} in {uri_a}: a paired "
                             f"comparison needs the same examples")


def settings_difference(a: Manifest, b: Manifest) -> dict[str, list[Any]]:
    """The evaluation settings that differ: {key: [a's, b's]}."""
    identity_a, identity_b = a.config.eval_identity(), b.config.eval_identity()
    return {key: [identity_a.get(key), identity_b.get(key)]
            for key in sorted(set(identity_a) | set(identity_b)) if identity_a.get(key) != identity_b.get(key)}


def pair_checkpoints(a: Manifest, b: Manifest) -> tuple[list[tuple[str, str, str]], list[str], list[str]]:
    """([(name in a, name in b, "name" | "version")], unpaired of a, unpaired of b): by name,
    then the rest by storage version. Failed checkpoints have no results and pair with nothing."""
    left = {entry.name: entry for entry in a.checkpoints if entry.error is None}
    right = {entry.name: entry for entry in b.checkpoints if entry.error is None}
    pairs = [(name, name, "name") for name in left if name in right]
    rest_b = {entry.version: name for name, entry in right.items() if name not in left and entry.version}
    for name, entry in left.items():
        if name not in right and entry.version in rest_b:
            pairs.append((name, rest_b.pop(entry.version), "version"))
    paired_a, paired_b = {p[0] for p in pairs}, {p[1] for p in pairs}
    return pairs, [n for n in left if n not in paired_a], [n for n in right if n not in paired_b]
