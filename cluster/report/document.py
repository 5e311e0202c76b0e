"""The report as a small document model — sections of text, tables, figures and code — and
its two renderings: Markdown (figures as PNG files beside it) and one self-contained HTML
file (figures embedded as base64 PNG, CSS inline, no script, nothing fetched).

Both renderings come from the same blocks, so a table says the same thing in either file,
and both are deterministic: the same document gives the same bytes.
"""

from __future__ import annotations

import base64
import html
import re
from dataclasses import dataclass, field

PLOTS_DIR = "plots"
# A number, optionally signed, in e-notation or followed by its interval: "12.50 (4.01–39.94)".
NUMERIC_CELL = re.compile(r"^[-+]?[\d,]*\.?\d+(e[-+]\d+)?( \([\d.]+–[\d.]+\))?$")
UNDEFINED = "—"
LONG_WORD = 40


@dataclass
class Text:
    text: str


@dataclass
class Table:
    columns: list[str]
    rows: list[list[str]]
    caption: str | None = None
    # Long detail tables (one row per bin, per component, …) fold away in the HTML.
    collapsed: bool = False


@dataclass
class Figure:
    name: str  # file stem of the PNG beside report.md
    png: bytes
    alt: str  # what the figure shows, in words and numbers, for readers without it
    caption: str


@dataclass
class Code:
    summary: str
    text: str


Block = Text | Table | Figure | Code


@dataclass
class Section:
    title: str
    blocks: list[Block] = field(default_factory=list)

    @property
    def anchor(self) -> str:
        return re.sub(r"[^a-z0-9]+", "-", self.title.lower()).strip("-")


@dataclass
class Banner:
    """What a reader must know before any figure: shown above everything, in both files."""

    label: str  # one word: PARTIAL, FAILED
    text: str


@dataclass
class Document:
    title: str
    intro: list[Block]
    sections: list[Section]
    banner: Banner | None = None

    def figures(self) -> list[Figure]:
        blocks = self.intro + [b for s in self.sections for b in s.blocks]
        return [b for b in blocks if isinstance(b, Figure)]


# --------------------------------------------------------------------------- Markdown


def render_markdown(doc: Document) -> str:
    """Every string is escaped (`md_text`): names come from configs, datasets and error
    messages, and must read as themselves, never as markup, wherever report.md is rendered."""
    out = [f"# {md_text(doc.title)}", ""]
    if doc.banner is not None:
        out += [f"> **{md_text(doc.banner.label)}** — {md_text(doc.banner.text)}", ""]
    out += _markdown_blocks(doc.intro)
    out += ["## Contents", ""]
    out += [f"{i}. [{md_text(s.title)}](#{s.anchor})" for i, s in enumerate(doc.sections, 1)] + [""]
    for section in doc.sections:
        out += [f"## {md_text(section.title)}", ""]
        out += _markdown_blocks(section.blocks)
    return "\n".join(out).rstrip("\n") + "\n"


def _markdown_blocks(blocks: list[Block]) -> list[str]:
    out: list[str] = []
    for block in blocks:
        if isinstance(block, Text):
            out += [MD_BLOCK_START.sub(r"\1\\\2", md_text(block.text)), ""]
        elif isinstance(block, Table):
            if block.caption:
                out += [f"*{md_text(block.caption)}*", ""]
            out.append("| " + " | ".join(md_text(c) for c in block.columns) + " |")
            out.append("|" + "|".join("---" for _ in block.columns) + "|")
            out += ["| " + " | ".join(md_text(c) for c in row) + " |" for row in block.rows]
            out.append("")
        elif isinstance(block, Figure):
            out += [f"![{md_text(block.alt)}]({PLOTS_DIR}/{block.name}.png)", "", f"*{md_text(block.caption)}*", ""]
        elif isinstance(block, Code):
            # HTML rather than a fenced block: a fence cannot escape anything, and the config
            # holds user-supplied paths; <pre> keeps the text as it is, entities decoded.
            out += [f"<details><summary>{html.escape(block.summary, quote=False)}</summary>", "",
                    "<pre><code>" + html.escape(block.text.rstrip("\n"), quote=False), "</code></pre>", "",
                    "</details>", ""]
    return out


# Markdown's inline syntax: code spans, emphasis, links and images, table cells, escapes.
MD_PUNCTUATION = re.compile(r"([\\`*\[\]|])")
# An underscore opens or closes emphasis only beside a non-word character: sweep-step_100 stays as it is.
MD_EMPHASIS_UNDERSCORE = re.compile(r"(?<![A-Za-z0-9])_|_(?![A-Za-z0-9])")
# What makes a paragraph a heading, a list or a rule when it starts it (> is an entity by then).
MD_BLOCK_START = re.compile(r"^(\d*)([#+.)-])")


def md_text(text: str) -> str:
    """`text` as inline Markdown that renders as exactly `text` on one line: &, < and > as
    entities (no tag, no autolink), Markdown's inline punctuation backslash-escaped, | too
    (it would end a table cell), line breaks as spaces."""
    text = html.escape(" ".join(text.splitlines()), quote=False)
    return MD_EMPHASIS_UNDERSCORE.sub(r"\\_", MD_PUNCTUATION.sub(r"\\\1", text))


# --------------------------------------------------------------------------- HTML

STYLE = """
body { font: 15px/1.45 -apple-system, "Segoe UI", Roboto, "Helvetica Neue", Arial, sans-serif;
       color: #1d2329; max-width: 1200px; margin: 0 auto; padding: 24px 32px 64px; }
h1 { font-size: 26px; margin: 0 0 8px; }
h2 { font-size: 20px; margin: 36px 0 10px; padding-top: 8px; border-top: 1px solid #d6dbe0; }
p { margin: 6px 0 10px; }
.banner { margin: 10px 0 18px; padding: 10px 14px; background: #fff4d6; border-left: 6px solid #d08a00;
          font-size: 16px; }
nav ol { columns: 3; margin: 8px 0 0; padding-left: 22px; }
a { color: #1f5fa8; }
.scroll { overflow-x: auto; margin: 6px 0 16px; }
table { border-collapse: collapse; font-size: 13px; }
caption { caption-side: top; text-align: left; font-style: italic; color: #4a545e; padding: 2px 0 6px; }
th, td { padding: 4px 10px; border-bottom: 1px solid #e3e7eb; text-align: left; vertical-align: top; }
th { background: #f1f4f7; font-weight: 600; }
th.num, td.num { text-align: right; font-variant-numeric: tabular-nums; }
td.word, td.num, .word { white-space: nowrap; }
td.long { word-break: break-all; min-width: 16em; }
tbody tr:nth-child(even) td { background: #fafbfc; }
figure { margin: 10px 0 22px; }
figure img { max-width: 100%; height: auto; border: 1px solid #e3e7eb; }
figcaption { font-size: 13px; color: #4a545e; margin-top: 4px; }
details { margin: 6px 0 16px; }
summary { cursor: pointer; color: #1f5fa8; }
pre { background: #f6f8fa; padding: 10px 12px; font-size: 12px; overflow-x: auto; }
code, .mono { font-family: ui-monospace, SFMono-Regular, Menlo, Consolas, monospace; font-size: 12px; }
""".strip()


def render_html(doc: Document) -> str:
    esc = html.escape
    out = [
        "<!DOCTYPE html>",
        '<html lang="en">',
        "<head>",
        '<meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{esc(doc.title)}</title>",
        f"<style>\n{STYLE}\n</style>",
        "</head>",
        "<body>",
        f"<h1>{esc(doc.title)}</h1>",
    ]
    if doc.banner is not None:
        out.append(f'<p class="banner" role="alert"><strong>{esc(doc.banner.label)}</strong> — '
                   f"{esc(doc.banner.text)}</p>")
    out += _html_blocks(doc.intro)
    out.append("<nav><ol>")
    out += [f'<li><a href="#{s.anchor}">{esc(s.title)}</a></li>' for s in doc.sections]
    out.append("</ol></nav>")
    for section in doc.sections:
        out.append(f'<section id="{section.anchor}">')
        out.append(f"<h2>{esc(section.title)}</h2>")
        out += _html_blocks(section.blocks)
        out.append("</section>")
    out += ["</body>", "</html>"]
    return "\n".join(out) + "\n"


def _html_blocks(blocks: list[Block]) -> list[str]:
    esc = html.escape
    out: list[str] = []
    for block in blocks:
        if isinstance(block, Text):
            out.append(f"<p>{esc(block.text)}</p>")
        elif isinstance(block, Table):
            table = _html_table(block)
            if block.collapsed:
                label = block.caption or "table"
                out.append(f"<details><summary>{esc(label)} ({len(block.rows)} rows)</summary>{table}</details>")
            else:
                out.append(table)
        elif isinstance(block, Figure):
            data = base64.b64encode(block.png).decode("ascii")
            out.append(f'<figure><img src="data:image/png;base64,{data}" alt="{esc(block.alt)}">'
                       f"<figcaption>{esc(block.caption)}</figcaption></figure>")
        elif isinstance(block, Code):
            out.append(f"<details><summary>{esc(block.summary)}</summary><pre><code>{esc(block.text)}</code></pre>"
                       "</details>")
    return out


def _html_table(table: Table) -> str:
    esc = html.escape
    caption = f"<caption>{esc(table.caption)}</caption>" if table.caption and not table.collapsed else ""
    numeric = [_numeric_column([row[i] for row in table.rows]) for i in range(len(table.columns))]
    head = "".join(f'<th class="num">{esc(c)}</th>' if n else f"<th>{esc(c)}</th>"
                   for c, n in zip(table.columns, numeric))
    body = "".join("<tr>" + "".join(_html_cell(c, n) for c, n in zip(row, numeric)) + "</tr>" for row in table.rows)
    return f'<div class="scroll"><table>{caption}<thead><tr>{head}</tr></thead><tbody>{body}</tbody></table></div>'


def _numeric_column(cells: list[str]) -> bool:
    """Right-aligned when every defined cell is a number (a column of mixed text stays left)."""
    defined = [c for c in cells if c and c != UNDEFINED]
    return bool(defined) and all(NUMERIC_CELL.match(c) for c in defined)


def _html_cell(text: str, numeric: bool) -> str:
    """Names such as `sweep-step_100` never break at their hyphens; lists of them break
    between items only."""
    if numeric:
        return f'<td class="num">{html.escape(text)}</td>'
    if " " not in text:
        kind = "word" if len(text) <= LONG_WORD else "long"  # a hash or a URI may break anywhere
        return f'<td class="{kind}">{html.escape(text)}</td>'
    words = (f'<span class="word">{html.escape(w)}</span>' if "-" in w else html.escape(w) for w in text.split(" "))
    return f"<td>{' '.join(words)}</td>"
