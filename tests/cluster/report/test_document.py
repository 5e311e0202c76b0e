"""The report's two renderings of one document: every user-supplied string (set, tier,
checkpoint and ensemble names, error messages, paths) reads as itself in report.md and
report.html, never as markup."""

from __future__ import annotations

import html
import re

import pytest

from cluster.report.document import Banner, Code, Document, Figure, Section, Table, Text, render_html, render_markdown

HOSTILE = ["<script>alert(1)</script>", "<svg onload=alert(1)>", "a|b", "`tick` and ``two``", "[x](javascript:1)",
           "*bold* _lead_ a&b", "# heading", "1. list", "line one\nline two"]
RAW_TAGS = re.compile(r"<script|<svg")


def hostile_document() -> Document:
    return Document(
        title=f"hrm-eval report — run {HOSTILE[0]}",
        banner=Banner("PARTIAL", f"the run failed: {HOSTILE[1]}"),
        intro=[Text(name) for name in HOSTILE],
        sections=[Section("Per set and per tier", [
            Table(["checkpoint", "set", "tier"], [[HOSTILE[0], HOSTILE[1], name] for name in HOSTILE],
                  caption=f"Figures of {HOSTILE[2]}"),
            Figure("sets", b"\x89PNG", alt=f"Exact accuracy of {HOSTILE[0]} {HOSTILE[4]}", caption=HOSTILE[1]),
            Code("The run config (as validated)", f"dataset:\n  uri: {HOSTILE[0]}\n  sets: ['{HOSTILE[2]}']\n"),
        ])],
    )


def md_unescape(text: str) -> str:
    """What a Markdown renderer shows for escaped inline text."""
    return html.unescape(re.sub(r"\\([!-/:-@\[-`{-~])", r"\1", text))


def test_no_user_supplied_tag_link_or_code_span_survives_into_report_md():
    md = render_markdown(hostile_document())
    assert RAW_TAGS.search(md) is None
    # No code span and no link but the report's own (contents, the figure): each is escaped.
    text = [line.removeprefix("![").split("](plots/")[0] for line in md[:md.index("<pre>")].splitlines()
            if not line.startswith("1. [")]
    assert re.search(r"(?<!\\)[`\[\]]", "\n".join(text)) is None
    # A name never breaks a table: every row has its three cells.
    rows = [line for line in md.splitlines() if line.startswith("| ")]
    assert rows and all(len(re.split(r"(?<!\\)\|", row)) == 5 for row in rows)


@pytest.mark.parametrize("name", HOSTILE)
def test_every_hostile_name_still_reads_as_itself_in_report_md(name):
    md = render_markdown(hostile_document())
    shown = " ".join(name.splitlines())
    cells = [md_unescape(c.strip()) for line in md.splitlines() if line.startswith("| ")
             for c in re.split(r"(?<!\\)\|", line)[1:-1]]
    assert shown in cells
    assert any(md_unescape(line.lstrip("\\")) == shown or md_unescape(line) == shown for line in md.splitlines())


def test_a_paragraph_that_starts_like_a_heading_or_a_list_stays_a_paragraph():
    md = render_markdown(hostile_document()).splitlines()
    assert "\\# heading" in md and "1\\. list" in md


def test_the_config_in_report_md_is_preformatted_html_with_its_text_escaped():
    md = render_markdown(hostile_document())
    block = md[md.index("<details><summary>The run config"):]
    assert "<pre><code>dataset:\n  uri: &lt;script&gt;alert(1)&lt;/script&gt;\n  sets: ['a|b']\n</code></pre>" in block


def test_report_html_escapes_the_same_names_everywhere():
    page = render_html(hostile_document())
    assert RAW_TAGS.search(page) is None and "href=\"javascript" not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page and "&lt;svg onload=alert(1)&gt;" in page
    assert '<p class="banner" role="alert"><strong>PARTIAL</strong> — the run failed: &lt;svg onload=alert(1)&gt;</p>' \
        in page
