"""A comparison of two runs (`cluster.results.compare`) as a document, rendered like the report."""

from __future__ import annotations

from typing import Any

from hrm import storage
from hrm.secrets import redact

from cluster.report.document import Document, Section, Table, Text, render_html, render_markdown
from cluster.report.format import count, p_value, pct, points

COMPARE_MD, COMPARE_HTML = "compare.md", "compare.html"


def comparison_document(doc: dict[str, Any]) -> Document:
    settings = doc["settings_compared"]
    compared = ", ".join(f"{key} {a} → {b}" for key, (a, b) in settings.items()) or "none: the same evaluation settings"
    rows = [[row["a"], row["b"], row["matched_by"], count(row["examples"]), pct(row["exact_a"]), pct(row["exact_b"]),
             points(row["exact_b"], row["exact_a"]), pct(row["token_a"]), pct(row["token_b"]), count(row["only_a"]),
             count(row["only_b"]), p_value(row["p_value"]), "yes" if row["significant"] else "no"]
            for row in doc["pairs"]]
    unpaired = [Text(f"Only in {side} (no partner by name or file version): " + ", ".join(doc[f"only_in_{side}"]))
                for side in ("a", "b") if doc[f"only_in_{side}"]]
    return Document(
        title=f"hrm-eval comparison — {doc['b']} against {doc['a']}",
        intro=[Text(f"a: {doc['a']}; b: {doc['b']}. Both evaluated the dataset with sha256 "
                    f"{doc['dataset']['content_hash']} (split {doc['dataset']['split']}) on the same examples. "
                    f"Settings compared: {compared}.")],
        sections=[Section("Checkpoints", [
            Text(f"{len(doc['pairs'])} checkpoint(s) paired (by name, then by file version); {doc['significant']} "
                 "differ beyond chance. Exact and token accuracy in %, change in points (b − a); only a right / "
                 "only b right: examples exactly right in one run alone; McNemar's paired test on them (exact "
                 "binomial below 25 discordant examples)."),
            Table(["checkpoint (a)", "checkpoint (b)", "paired by", "examples", "exact % a", "exact % b",
                   "change (points)", "token % a", "token % b", "only a right", "only b right", "p-value",
                   "p < 0.05"], rows),
            *unpaired,
        ])],
    )


def write_comparison(doc: dict[str, Any], output: str) -> tuple[str, str]:
    """Publish compare.md and compare.html under `output`; their URIs (html, md)."""
    document = comparison_document(doc)
    md_uri, html_uri = storage.join(output, COMPARE_MD), storage.join(output, COMPARE_HTML)
    storage.write_bytes_atomic(md_uri, redact(render_markdown(document)).encode())
    storage.write_bytes_atomic(html_uri, redact(render_html(document)).encode())
    return html_uri, md_uri
