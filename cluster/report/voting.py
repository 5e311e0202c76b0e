"""The report's sections on votes: ARC augmentation voting, test-time augmentation, and
checkpoint ensembles against their best member."""

from __future__ import annotations

from typing import Any

from cluster.report.document import Block, Table, Text
from cluster.report.format import count, num, p_value, pct, points
from cluster.report.results import RunResults

TRM_RULE = "TRM rule: per-test-input fraction"
HRM_RULE = "HRM rule: all test inputs of a puzzle"


# --------------------------------------------------------------------------- 6. voting


PARTIAL_NO_VOTES = "None in a partial report: votes and ensembles are computed from every unit's predictions."


def voting(r: RunResults) -> list[Block]:
    if r.partial is not None:
        return [Text(PARTIAL_NO_VOTES)]
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
            bounds = (entry.get("pass_at_k_ci") or {}).get(key) or {}
            if scores is not None:
                rows.append([name, rule, count(entry["puzzles"]), count(entry["test_inputs"]),
                             *(_with_interval(scores[k], bounds.get(k)) if k in scores else "" for k in ks)])
    return [
        Text("ARC augmentation voting: predictions cropped, un-augmented and voted per (puzzle, test input); "
             "candidates ranked by votes, then mean sigmoid(q_halt). pass@k in %, under both scoring rules, with its "
             "95% interval over puzzles (Wilson for the HRM rule's pass or fail per puzzle, the normal interval of "
             "a mean for the TRM rule's fractions)."),
        Table(["checkpoint", "scoring rule", "puzzles", "test inputs", *(f"pass@{k}" for k in ks)], rows,
              caption="ARC pass@k (%)"),
    ]


def _with_interval(score: float, bounds: list[float] | None) -> str:
    return pct(score) if bounds is None else f"{pct(score)} ({pct(bounds[0])}–{pct(bounds[1])})"


def _tta(tta: dict[str, Any]) -> list[Block]:
    if not tta:
        return [Text("No test-time augmentation in this run.")]
    rows = []
    for name, entry in tta.items():
        plain, voted = entry["plain"], entry["voted"]
        rows.append([name, count(entry["copies"]), entry["level"], count(plain["count"]),
                     pct(plain["exact_accuracy"]), pct(voted["exact_accuracy"]),
                     points(voted["exact_accuracy"], plain["exact_accuracy"]), pct(plain["token_accuracy"]),
                     pct(voted["token_accuracy"]), points(voted["token_accuracy"], plain["token_accuracy"])])
    return [
        Text("Test-time augmentation: each example evaluated in transformed copies, predictions mapped back and "
             "voted. Gains are voted − plain, in points."),
        Table(["checkpoint", "copies", "vote level", "examples", "exact %, plain", "exact %, voted",
               "exact gain (points)", "token %, plain", "token %, voted", "token gain (points)"], rows,
              caption="Test-time augmentation gains"),
    ]




# --------------------------------------------------------------------------- 7. ensembles


def ensembles(r: RunResults) -> list[Block]:
    if r.partial is not None:
        return [Text(PARTIAL_NO_VOTES)]
    found = r.votes().get("ensembles") or []
    if not found:
        return [Text("No ensembles in this run.")]
    rows = []
    for e in found:
        test = e["mcnemar"]
        rows.append([e["name"], e["level"], ", ".join(e["members"]), count(e["count"]), pct(e["exact_accuracy"]),
                     pct(e["token_accuracy"]), e["best_member"], pct(e["best_member_exact_accuracy"]),
                     points(e["exact_accuracy"], e["best_member_exact_accuracy"]), count(test["b"]),
                     count(test["c"]), "exact binomial" if test["statistic"] is None else num(test["statistic"], 3),
                     p_value(test["p_value"])])
    return [
        Text("Checkpoint ensembles (majority vote over stored predictions) against their best member. Gain: "
             "ensemble − best member exact accuracy, in points. McNemar's paired test on per-example exactness: "
             "b = examples only the ensemble gets exact, c = only the best member; the statistic is the "
             "continuity-corrected χ², or the exact binomial test when b + c is small."),
        Table(["ensemble", "vote level", "members", "examples", "exact %", "token %", "best member",
               "best member exact %", "gain (points)", "b", "c", "McNemar statistic", "p-value"], rows,
              caption="Ensembles against their best member"),
    ]
