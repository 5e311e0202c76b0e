"""The run report: built from real results (five checkpoints of a tiny HRM sweep evaluated by
the real evaluator, committed and aggregated by the real driver, fixed and adaptive), then
read back — every table's figures against metrics.json, health.json and the unit records."""

from __future__ import annotations

import html
import html.parser
import json
import re
import shutil
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.fs as pafs
import pytest

from hrm import storage
from hrm.checkpoint.health import relative_change
from hrm.checkpoint.loading import load_checkpoint
from hrm.data.schema import DatasetMetadata, PuzzleArrays
from hrm.data.writer import write_dataset
from hrm.errors import InputError
from hrm.eval.metrics import StatsTable

from cluster.actor import Evaluator
from cluster.config import OutputConfig
from cluster.driver import execute
from cluster.manifest import (
    RunLedger,
    build_manifest,
    read_manifest,
    read_unit_states,
    unit_states,
    write_manifest,
    write_unit_states,
)
from cluster.plan import prepare
from cluster.report.build import write_report
from cluster.report.voting import HRM_RULE, PARTIAL_NO_VOTES, TRM_RULE
from cluster.results.health import collect_health, read_health, write_health
from cluster.results.layout import Segment, commit_unit, read_committed, read_unit_records, write_segment
from cluster.results.metrics import read_leaderboard, read_metrics, write_metrics

from jobs.cli import main

from tests.cluster_factories import NUM_IDS, SEQ_LEN, VOCAB, run_config, run_in_process
from tests.factories import make_checkpoint

STEPS = (100, 200, 300, 400, 500)
SECTIONS = ["Run summary", "Leaderboard", "Reasoning depth", "Q-halt calibration", "Per set and per tier", "Voting",
            "Ensembles", "Model card", "Checkpoint health", "Comparison", "Failure gallery"]


# --------------------------------------------------------------------------- building real runs


def make_dataset(uri: Path) -> str:
    """Two sets whose labels have only 1 (easy) or 2 (hard) valid tokens, so that random
    checkpoints get some examples exactly right and differ from one another; a tier column."""
    rng = np.random.default_rng(7)
    arrays = {}
    for name, count, valid in (("easy", 40, 1), ("hard", 24, 2)):
        inputs = rng.integers(1, VOCAB, size=(count, SEQ_LEN)).astype(np.int32)
        labels = np.zeros((count, SEQ_LEN), np.int32)  # 0 = ignore_label_id
        labels[:, :valid] = rng.integers(1, VOCAB, size=(count, valid))
        offsets = np.arange(count + 1, dtype=np.int32)
        arrays[name] = PuzzleArrays(inputs, labels, rng.integers(1, NUM_IDS, size=count).astype(np.int32), offsets,
                                    offsets.copy(), columns={"tier": (np.arange(count) % 3).astype(np.int8)})
    meta = DatasetMetadata(pad_id=0, ignore_label_id=0, blank_identifier_id=0, vocab_size=VOCAB, seq_len=SEQ_LEN,
                           num_puzzle_identifiers=NUM_IDS, total_groups=64, mean_puzzle_examples=1.0,
                           sets=list(arrays))
    write_dataset(uri, {"test": arrays}, {"test": meta}, ["<blank>", "a", "b"])
    return str(uri)


def evaluate_run(root: Path, data: str, sweep: Path, protocol: str) -> str:
    """Every unit evaluated by the real Evaluator in this process and committed; then the real
    driver finds them all committed and aggregates metrics, leaderboard and manifest (no Ray
    needed: nothing is left to schedule)."""
    config = run_config([{"run": str(sweep)}], data, str(root / protocol), eval={"protocol": protocol},
                        cluster={"cache_size": 1})
    prepared = prepare(config)
    actor = Evaluator(config, prepared.run)
    refs = {ref.name: ref for ref in prepared.checkpoints}
    for unit in prepared.units:
        commit_unit(prepared.run, actor(unit, refs[unit.checkpoint]))
    manifest = execute(prepared)
    write_health(prepared.run, manifest)
    return prepared.run


def votes_section(metrics: dict) -> dict:
    """The `votes` section in the shape the vote step writes, for two checkpoints of the run."""
    names = list(metrics["checkpoints"])
    first, second = names[0], names[1]
    exact = {n: metrics["checkpoints"][n]["metrics"]["all"]["exact_accuracy"] for n in names}
    token = {n: metrics["checkpoints"][n]["metrics"]["all"]["token_accuracy"] for n in names}
    return {
        "arc": {
            first: {"pass_at_k": {"trm": {"1": 0.375, "2": 0.375, "5": 0.5, "10": 0.625},
                                  "hrm": {"1": 0.25, "2": 0.25, "5": 0.375, "10": 0.5}},
                    "puzzles": 8, "test_inputs": 10},
        },
        "tta": {
            second: {"copies": 8, "level": "sequence",
                     "plain": {"exact_accuracy": exact[second], "token_accuracy": token[second], "count": 64},
                     "voted": {"exact_accuracy": exact[second] + 0.0625, "token_accuracy": token[second] + 0.03125,
                               "count": 64}},
        },
        "ensembles": [
            {"name": "top2", "members": [first, second], "level": "sequence", "exact_accuracy": 0.15625,
             "token_accuracy": 0.2, "count": 64, "best_member": first, "best_member_exact_accuracy": exact[first],
             "mcnemar": {"statistic": None, "p_value": 0.03125, "b": 5, "c": 0}},
            {"name": "all5-token", "members": names, "level": "token", "exact_accuracy": 0.125,
             "token_accuracy": 0.21, "count": 64, "best_member": first, "best_member_exact_accuracy": exact[first],
             "mcnemar": {"statistic": 4.5, "p_value": 3.4e-05, "b": 40, "c": 12}},
        ],
    }


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, str]:
    root = tmp_path_factory.mktemp("report")
    data = make_dataset(root / "data")
    sweep = root / "sweep"
    make_checkpoint(sweep, steps=STEPS, q_scale=0.5, vocab_size=VOCAB, seq_len=SEQ_LEN, num_puzzle_identifiers=NUM_IDS)
    fixed = evaluate_run(root, data, sweep, "fixed")
    adaptive = evaluate_run(root, data, sweep, "adaptive")
    metrics = read_metrics(fixed)
    write_metrics(fixed, {**metrics, "votes": votes_section(metrics)})
    write_report(fixed, other_protocol_run=adaptive)
    write_report(adaptive)
    return {"fixed": fixed, "adaptive": adaptive}


# --------------------------------------------------------------------------- reading the report back


def md_sections(run: str) -> dict[str, str]:
    text = (Path(run) / "report.md").read_text()
    parts = re.split(r"^## (.+)$", text, flags=re.M)
    return {parts[i]: parts[i + 1] for i in range(1, len(parts), 2)}


def md_tables(section: str) -> list[list[list[str]]]:
    """Each Markdown table of a section as rows of cells, the header row first."""
    tables, current = [], None
    for line in section.splitlines():
        if line.startswith("|"):
            if line.startswith("|---"):
                continue
            cells = [md_unescape(c.strip()) for c in re.split(r"(?<!\\)\|", line.strip())[1:-1]]
            current = current if current is not None else []
            current.append(cells)
        elif current is not None:
            tables.append(current)
            current = None
    if current is not None:
        tables.append(current)
    return tables


def md_unescape(text: str) -> str:
    """What a Markdown renderer shows for escaped text: backslash escapes and entities resolved."""
    return html.unescape(re.sub(r"\\([!-/:-@\[-`{-~])", r"\1", text))


def table_by_header(section: str, first_column: str, containing: str | None = None) -> list[dict[str, str]]:
    for table in md_tables(section):
        header = table[0]
        if header[0] == first_column and (containing is None or containing in header):
            return [dict(zip(header, row)) for row in table[1:]]
    raise AssertionError(f"no table starting with {first_column!r} (with {containing!r})")


class HtmlTables(html.parser.HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tables: list[list[list[str]]] = []
        self.images: list[tuple[str, str]] = []
        self.external: list[str] = []
        self._cell: list[str] | None = None

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "table":
            self.tables.append([])
        elif tag == "tr":
            self.tables[-1].append([])
        elif tag in ("td", "th"):
            self._cell = []
        elif tag == "img":
            self.images.append((attrs["src"], attrs.get("alt", "")))
        for key in ("src", "href"):
            value = attrs.get(key) or ""
            if value and not value.startswith(("data:", "#")):
                self.external.append(value)

    def handle_data(self, data):
        if self._cell is not None:
            self._cell.append(data)

    def handle_endtag(self, tag):
        if tag in ("td", "th"):
            self.tables[-1][-1].append("".join(self._cell).strip())
            self._cell = None


def pct(x: float | None) -> str:
    return "—" if x is None else f"{100 * x:.2f}"


def figures(metrics: dict, name: str) -> dict:
    return metrics["checkpoints"][name]["metrics"]["all"]


def number(cell: str) -> float:
    return float(cell.replace(",", "").split()[0])


# --------------------------------------------------------------------------- the tests


def test_the_report_has_every_section_in_order_and_says_in_one_line_what_a_run_lacks(runs):
    fixed, adaptive = md_sections(runs["fixed"]), md_sections(runs["adaptive"])
    assert list(fixed)[1:] == SECTIONS and list(adaptive)[1:] == SECTIONS  # after "Contents"
    assert "No voting in this run." in adaptive["Voting"]
    assert "No ensembles in this run." in adaptive["Ensembles"]
    assert "needs the fixed protocol; this run is adaptive" in adaptive["Reasoning depth"]
    assert "No halting-step histogram" in fixed["Reasoning depth"]
    assert "this run has the adaptive protocol only" in adaptive["Reasoning depth"]
    for run in runs.values():
        for name in ("report.md", "report.html"):
            text = re.sub(r"data:image/png;base64,[^\"]+", "", (Path(run) / name).read_text())
            for word in ("tbd", "todo", "placeholder", "expected", "estimate"):
                assert word not in text.lower(), (name, word)
            assert not re.search(r"\b(None|nan|inf)\b", text), name  # an unformatted Python value


def test_the_run_summary_names_the_dataset_hash_protocol_versions_and_measured_durations(runs):
    manifest = read_manifest(runs["fixed"])
    rows = {r["item"]: r["value"] for r in table_by_header(md_sections(runs["fixed"])["Run summary"], "item")}
    assert rows["dataset sha256"] == manifest.dataset["content_hash"]
    assert rows["git sha"] == manifest.git_sha
    assert rows["protocol"] == "fixed: every example runs all halt_max_steps ACT steps (4 here), as the reference evaluator does"
    assert rows["duration: total"] == f"{manifest.timings['total_s']:,.1f} s"
    assert rows["units"] == "25 planned, 25 resumed, 0 evaluated, 0 failed, 0 pending"
    assert rows["examples/s"].startswith("none evaluated in this run")  # all committed before the driver ran
    assert rows["puzzles"] == "64"
    assert f"torch {manifest.versions['torch']}" in rows["versions"]
    checkpoints = table_by_header(md_sections(runs["fixed"])["Run summary"], "checkpoint", "version")
    assert [(c["checkpoint"], c["version"]) for c in checkpoints] == [(c.name, c.version)
                                                                      for c in manifest.checkpoints]


def test_the_leaderboard_rows_are_the_stored_figures_best_first(runs):
    run = runs["fixed"]
    metrics, health = read_metrics(run), read_health(run)
    records = list(read_unit_records(run, {u.id for u in read_unit_states(run)}))
    ranked = read_leaderboard(run).to_pylist()
    rows = table_by_header(md_sections(run)["Leaderboard"], "rank")
    assert [r["checkpoint"] for r in rows] == [r["checkpoint"] for r in ranked]
    assert len(rows) == len(STEPS)
    assert [r["best"] for r in rows] == ["★"] + [""] * (len(STEPS) - 1)
    exacts = {figures(metrics, r["checkpoint"])["exact_accuracy"] for r in rows}
    assert len(exacts) > 1  # the checkpoints differ, so a wrong row would show
    for row in rows:
        name, fig = row["checkpoint"], figures(metrics, row["checkpoint"])
        assert row["exact % (95% CI)"] == (f"{pct(fig['exact_accuracy'])} ({pct(fig['exact_ci_low'])}–"
                                           f"{pct(fig['exact_ci_high'])})")
        assert row["token % (95% CI)"] == (f"{pct(fig['token_accuracy'])} ({pct(fig['token_ci_low'])}–"
                                           f"{pct(fig['token_ci_high'])})")
        assert row["q-halt acc %"] == pct(fig["q_halt_accuracy"])
        assert number(row["mean steps"]) == pytest.approx(fig["mean_steps"], abs=0.005)
        assert number(row["lm loss"]) == pytest.approx(fig["lm_loss"], abs=5e-5)
        assert int(number(row["examples"])) == fig["count"] == 64
        total = health["checkpoints"][name]["components"][-1]
        assert int(number(row["parameters"])) == total["parameters"]
        assert number(row["size (MiB)"]) == pytest.approx(total["bytes"] / 2**20, abs=0.005)
        mine = [r for r in records if r.checkpoint == name]
        rate = sum(r.examples for r in mine) / sum(r.timings["eval_s"] for r in mine)
        assert number(row["examples/s"]) == pytest.approx(rate, abs=0.05)
        tests = metrics["paired"][name]
        if name == rows[0]["checkpoint"]:
            assert tests["vs_best"] is None and row["p vs best"] == "—"
        else:  # McNemar of its stored exact flags against the best's, marked ≈ when p >= 0.05
            p = tests["vs_best"]["p_value"]
            assert row["p vs best"] == ("≈ " if p >= 0.05 else "") + (f"{p:.4f}" if p >= 1e-4 else f"{p:.2e}")
            assert tests["indistinguishable_from_best"] == (p >= 0.05)
    assert "plots/accuracy-vs-step.png" in md_sections(run)["Leaderboard"]


def test_reasoning_depth_shows_the_per_step_curve_the_halting_histogram_and_what_halting_saved(runs):
    fixed, adaptive = read_metrics(runs["fixed"]), read_metrics(runs["adaptive"])
    per_step = table_by_header(md_sections(runs["fixed"])["Reasoning depth"], "checkpoint", "step 1")
    for row in per_step:
        curve = figures(fixed, row["checkpoint"])["exact_accuracy_by_step"]
        assert [row[f"step {i + 1}"] for i in range(len(curve))] == [pct(v) for v in curve]
    halting = table_by_header(md_sections(runs["adaptive"])["Reasoning depth"], "checkpoint", "halted at 1")
    for row in halting:
        histogram = figures(adaptive, row["checkpoint"])["steps_histogram"]
        assert {s: int(number(row[f"halted at {s}"])) for s in range(1, 5)} == {
            s: histogram.get(str(s), 0) for s in range(1, 5)}
    saved = table_by_header(md_sections(runs["fixed"])["Reasoning depth"], "checkpoint", "saved %")
    assert len(saved) == len(STEPS)
    for row in saved:
        f_fig, a_fig = figures(fixed, row["checkpoint"]), figures(adaptive, row["checkpoint"])
        fixed_steps = 4 * f_fig["count"]  # halt_max_steps 4, every example
        adaptive_steps = round(a_fig["mean_steps"] * a_fig["count"])
        assert int(number(row["forward steps, fixed"])) == fixed_steps
        assert int(number(row["forward steps, adaptive"])) == adaptive_steps
        assert row["saved %"] == pct(1 - adaptive_steps / fixed_steps)
        assert row["exact %, adaptive"] == pct(a_fig["exact_accuracy"])
        change = 100 * (a_fig["exact_accuracy"] - f_fig["exact_accuracy"])
        assert row["exact change (points)"] == f"{change:+.2f}"
    assert any(number(r["saved %"]) > 0 for r in saved)


def test_calibration_figures_and_reliability_bins_are_those_of_metrics_json(runs):
    metrics = read_metrics(runs["fixed"])
    section = md_sections(runs["fixed"])["Q-halt calibration"]
    for row in table_by_header(section, "checkpoint", "AUROC"):
        fig = figures(metrics, row["checkpoint"])
        assert row["q-halt acc %"] == pct(fig["q_halt_accuracy"])
        assert row["AUROC"] == ("—" if fig["q_halt_auroc"] is None else f"{fig['q_halt_auroc']:.4f}")
        assert row["± bound"] == ("—" if fig["q_halt_auroc_bound"] is None else f"{fig['q_halt_auroc_bound']:.3e}")
        assert row["ECE"] == f"{fig['q_halt_ece']:.4f}"
    bins = table_by_header(section, "checkpoint", "bin (%)")
    expected_bins = [(n, b) for n in metrics["checkpoints"] for b in figures(metrics, n)["q_halt_reliability"]
                     if b["count"]]
    assert len(bins) == len(expected_bins)
    for row, (name, b) in zip(bins, expected_bins):
        assert (row["checkpoint"], int(row["examples"])) == (name, b["count"])
        assert (row["mean confidence %"], row["exact %"]) == (pct(b["mean_confidence"]), pct(b["accuracy"]))
    assert "plots/reliability.png" in section


def test_every_set_and_tier_row_matches_its_group_in_metrics_json(runs):
    metrics = read_metrics(runs["fixed"])
    rows = table_by_header(md_sections(runs["fixed"])["Per set and per tier"], "checkpoint", "tier")
    assert len(rows) == len(STEPS) * (2 + 2 * 3)  # per checkpoint: 2 sets, each with 3 tiers
    for row in rows:
        groups = metrics["checkpoints"][row["checkpoint"]]["metrics"]
        fig = (groups["sets"][row["set"]] if row["tier"] == "(whole set)"
               else groups["tiers"][row["set"]][row["tier"]])
        assert int(row["examples"]) == fig["count"]
        assert row["exact % (95% CI)"].startswith(pct(fig["exact_accuracy"]) + " (")
        assert row["token %"] == pct(fig["token_accuracy"])


def test_voting_and_ensemble_tables_render_the_votes_section_with_both_rules_named(runs):
    votes = read_metrics(runs["fixed"])["votes"]
    sections = md_sections(runs["fixed"])
    arc = table_by_header(sections["Voting"], "checkpoint", "scoring rule")
    assert [r["scoring rule"] for r in arc] == [TRM_RULE, HRM_RULE]
    for row, rule in zip(arc, ("trm", "hrm")):
        scores = votes["arc"][row["checkpoint"]]["pass_at_k"][rule]
        assert {k: row[f"pass@{k}"] for k in scores} == {k: pct(v) for k, v in scores.items()}
    (tta,) = table_by_header(sections["Voting"], "checkpoint", "copies")
    entry = votes["tta"][tta["checkpoint"]]
    assert tta["exact gain (points)"] == "+6.25" and tta["token gain (points)"] == "+3.12"
    assert tta["exact %, voted"] == pct(entry["voted"]["exact_accuracy"])
    ensembles = table_by_header(sections["Ensembles"], "ensemble")
    assert [e["ensemble"] for e in ensembles] == ["top2", "all5-token"]
    assert [e["p-value"] for e in ensembles] == ["0.0312", "3.40e-05"]
    assert [e["McNemar statistic"] for e in ensembles] == ["exact binomial", "4.500"]
    assert ensembles[0]["gain (points)"] == f"{100 * (0.15625 - votes['ensembles'][0]['best_member_exact_accuracy']):+.2f}"
    comparison = table_by_header(sections["Comparison"], "checkpoint", "parameters")
    by_name = {r["checkpoint"]: r for r in comparison}
    first = next(iter(votes["arc"]))
    assert by_name[first]["ARC pass@2 % (TRM rule)"] == "37.50"
    assert by_name[first]["ARC pass@2 % (HRM rule)"] == "25.00"


def test_health_tables_are_health_json_and_drift_is_the_measured_weight_change(runs, tmp_path):
    run = runs["fixed"]
    health = read_health(run)
    section = md_sections(run)["Checkpoint health"]
    components = table_by_header(section, "component")
    first = next(iter(health["checkpoints"].values()))["components"]
    assert [(r["component"], int(number(r["parameters"])), int(number(r["bytes"]))) for r in components] == [
        (c["component"], c["parameters"], c["bytes"]) for c in first]
    assert "No NaN or Inf in any of the 5 checkpoints." in section
    drift = table_by_header(section, "from")
    assert len(drift) == len(STEPS) - 1
    sweep = Path(read_manifest(run).checkpoints[0].uri).parent
    before, after = load_checkpoint(sweep / "step_100"), load_checkpoint(sweep / "step_200")
    measured = relative_change(before, after)
    row = drift[0]
    assert (row["from"], row["to"]) == ("sweep-step_100", "sweep-step_200")
    for component, value in measured.items():
        assert row[component] == ("—" if value is None else f"{value:.3e}")
    assert "plots/weight-drift-sweep.png" in section


def test_the_comparison_table_holds_measured_latency_throughput_and_memory(runs):
    run = runs["fixed"]
    records = list(read_unit_records(run, {u.id for u in read_unit_states(run)}))
    for row in table_by_header(md_sections(run)["Comparison"], "checkpoint", "parameters"):
        mine = [r for r in records if r.checkpoint == row["checkpoint"]]
        eval_s = sum(r.timings["eval_s"] for r in mine)
        assert number(row["latency per puzzle (ms)"]) == pytest.approx(1000 * eval_s / 64, abs=0.005)
        peak = max(r.actor.peak_rss_bytes for r in mine)
        assert number(row["peak actor RSS (MiB)"]) == pytest.approx(peak / 2**20, abs=0.005)


def test_the_html_is_self_contained_and_holds_the_same_tables_as_the_markdown(runs):
    for run in runs.values():
        parser = HtmlTables()
        parser.feed((Path(run) / "report.html").read_text())
        md = [t for s in md_sections(run).values() for t in md_tables(s)]
        assert parser.tables == md
        assert parser.external == []
        assert parser.images and all(src.startswith("data:image/png;base64,") and alt for src, alt in parser.images)
        pngs = sorted((Path(run) / "plots").glob("*.png"))
        assert len(pngs) == len(parser.images)
        assert all(p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" for p in pngs)


def test_hrm_eval_report_regenerates_the_same_bytes_from_stored_results(runs, capsys):
    run = Path(runs["adaptive"])
    before = {p: p.read_bytes() for p in [run / "report.md", run / "report.html", *(run / "plots").glob("*.png")]}
    (run / "report.html").unlink()
    assert main(["report", str(run)]) == 0
    assert str(run / "report.html") in capsys.readouterr().out
    assert {p: p.read_bytes() for p in before} == before


@pytest.mark.s3
def test_a_run_stored_in_s3_gets_the_same_report_written_beside_it(runs, s3_bucket):
    local = Path(runs["adaptive"])
    remote = f"{s3_bucket}/results/{local.name}"
    fs, path = storage.resolve(remote)
    pafs.copy_files(str(local), path, source_filesystem=pafs.LocalFileSystem(), destination_filesystem=fs)
    for name in ("report.md", "report.html"):
        storage.delete(storage.join(remote, name))
    assert main(["report", remote]) == 0
    for name in ("report.md", "report.html"):
        assert storage.read_bytes(storage.join(remote, name)) == (local / name).read_bytes()


def test_set_tier_and_ensemble_names_read_as_themselves_in_both_files_never_as_markup(runs, tmp_path):
    run = tmp_path / "hostile"
    shutil.copytree(runs["fixed"], run)
    names = {"easy": "<script>alert(1)</script>", "hard": "<svg onload=alert(1)>", "0": "a|b", "1": "`tick`"}
    metrics = json.loads((run / "metrics.json").read_text())
    for entry in metrics["checkpoints"].values():
        figures = entry["metrics"]
        figures["sets"] = {names[s]: f for s, f in figures["sets"].items()}
        figures["tiers"] = {names[s]: {names.get(t, t): f for t, f in tiers.items()}
                            for s, tiers in figures["tiers"].items()}
    metrics["votes"]["ensembles"][0]["name"] = "<svg onload=alert(1)>"
    (run / "metrics.json").write_text(json.dumps(metrics))
    manifest = json.loads((run / "manifest.json").read_text())
    manifest["dataset"]["sets"] = [names[s] for s in manifest["dataset"]["sets"]]
    (run / "manifest.json").write_text(json.dumps(manifest))
    write_report(str(run))
    md, page = (run / "report.md").read_text(), (run / "report.html").read_text()
    for text in (md, page):
        assert "<script" not in text and "<svg" not in text
    rows = table_by_header(md_sections(str(run))["Per set and per tier"], "checkpoint", "tier")
    assert {r["set"] for r in rows} == {names["easy"], names["hard"]}
    assert {r["tier"] for r in rows} == {"(whole set)", "a|b", "`tick`", "2"}
    assert table_by_header(md_sections(str(run))["Ensembles"], "ensemble")[0]["ensemble"] == "<svg onload=alert(1)>"
    parser = HtmlTables()
    parser.feed(page)
    assert parser.tables == [t for s in md_sections(str(run)).values() for t in md_tables(s)]


# --------------------------------------------------------------------------- runs that did not complete


def leaderboard_figures(run: str) -> dict[str, dict[str, str]]:
    """The leaderboard's figure cells per checkpoint (rank, best and the paired tests depend on who
    else is there and on the run having finished)."""
    rows = table_by_header(md_sections(run)["Leaderboard"], "rank")
    return {r["checkpoint"]: {k: v for k, v in r.items()
                              if k not in ("rank", "best", "examples/s", "p vs best", "p vs previous step")}
            for r in rows}


def test_a_failed_run_without_metrics_is_reported_partial_with_the_figures_its_committed_units_give(runs, tmp_path):
    run = tmp_path / "failed"
    shutil.copytree(runs["adaptive"], run)
    (run / "metrics.json").unlink()
    (run / "leaderboard.parquet").unlink()
    manifest = json.loads((run / "manifest.json").read_text())
    manifest.update(status="failed", error="unit abc failed 3 times; last error: boom", failed_unit="abc")
    (run / "manifest.json").write_text(json.dumps(manifest))
    write_report(str(run))
    text = (run / "report.md").read_text()
    assert text.splitlines()[0].endswith("(partial)")
    assert text.splitlines()[2].startswith("> **PARTIAL** — the run failed: unit abc failed 3 times; last error: "
                                           "boom (unit abc).")
    assert "25 of 25 planned unit(s) committed, 320 of 320 example(s) in the figures" in text
    # Every unit was committed, so the figures are exactly those of the complete run.
    assert leaderboard_figures(str(run)) == leaderboard_figures(runs["adaptive"])
    sections = md_sections(str(run))
    assert sections["Voting"].strip() == sections["Ensembles"].strip() == PARTIAL_NO_VOTES
    assert not (run / "metrics.json").exists()  # the report publishes the report, never run outputs


@pytest.fixture(scope="module")
def stopped(runs, tmp_path_factory) -> dict[str, Any]:
    """The fixed run's plan under a run whose driver stopped: the first checkpoint's units all
    committed (those of its first three shards also compacted in a segment, as the driver
    does every SEGMENT_UNITS), two units of the second, none of the rest; no manifest."""
    manifest = read_manifest(runs["fixed"])
    root = tmp_path_factory.mktemp("stopped")
    config = manifest.config.model_copy(update={"output": OutputConfig(uri=str(root), run_id="stopped")})
    prepared = prepare(config)
    actor = Evaluator(config, prepared.run)
    refs = {ref.name: ref for ref in prepared.checkpoints}
    first, second = prepared.checkpoints[0].name, prepared.checkpoints[1].name
    chosen = [u for u in prepared.units if u.checkpoint == first]
    chosen += [u for u in prepared.units if u.checkpoint == second][1:3]
    ledger = RunLedger()
    for unit in chosen:
        record = actor(unit, refs[unit.checkpoint])
        commit_unit(prepared.run, record)
        if unit.checkpoint == first and unit.shard.set == "easy":
            ledger.commit(record, unit)
    write_segment(prepared.run, ledger.take_segment())
    return {"run": prepared.run, "config": config, "first": first, "second": second}


def test_a_stopped_run_is_reported_partial_with_exact_figures_for_what_it_committed(runs, stopped):
    run = stopped["run"]
    assert main(["report", run]) == 0
    text = (Path(run) / "report.md").read_text()
    lines = text.splitlines()
    assert lines[0] == "# hrm-eval report — run stopped (partial)"
    assert lines[2].startswith("> **PARTIAL** — the run stopped before it finished: it has no manifest.json")
    assert ("7 unit(s) committed, 88 example(s) in the figures; how many were planned is not known "
            "(the plan is in the manifest)") in lines[2]
    complete = leaderboard_figures(runs["fixed"])
    partial = leaderboard_figures(run)
    assert sorted(partial) == sorted([stopped["first"], stopped["second"]])
    first = partial[stopped["first"]]
    # All of the first checkpoint's units were committed: its figures are the complete run's.
    unknown = ("step", "parameters", "size (MiB)")  # they come from the manifest and health.json
    assert {k: v for k, v in first.items() if k not in unknown} == {
        k: v for k, v in complete[stopped["first"]].items() if k not in unknown}
    assert (first["step"], first["parameters"]) == ("—", "—")
    # The second's figures are those of its two committed units, merged exactly.
    records = [r for r in read_unit_records(run, {p.stem for p in (Path(run) / "units").glob("*.json")})
               if r.checkpoint == stopped["second"]]
    merged = StatsTable()
    for record in records:
        merged.merge(StatsTable.from_dict(record.stats))
    fig = merged.finalize()["all"]
    assert int(partial[stopped["second"]]["examples"]) == fig["count"] == sum(r.examples for r in records) == 24
    assert partial[stopped["second"]]["exact % (95% CI)"].startswith(pct(fig["exact_accuracy"]) + " (")
    assert partial[stopped["second"]]["token % (95% CI)"].startswith(pct(fig["token_accuracy"]) + " (")
    covered = {r["checkpoint"]: r for r in table_by_header(md_sections(run)["Run summary"], "checkpoint",
                                                           "units committed")}
    assert (covered[stopped["first"]]["units committed"], covered[stopped["first"]]["examples in the figures"]) == (
        "5", "64")
    assert (covered[stopped["second"]]["units committed"], covered[stopped["second"]]["examples in the figures"]) == (
        "2", "24")
    assert md_sections(run)["Voting"].strip() == PARTIAL_NO_VOTES
    assert sorted(p.name for p in Path(run).iterdir()) == ["plots", "predictions", "report.html", "report.md", "units"]


def test_a_stopped_runs_html_report_carries_the_partial_banner_and_the_markdowns_tables(stopped):
    run = stopped["run"]
    write_report(run)
    page = (Path(run) / "report.html").read_text()
    assert '<p class="banner" role="alert"><strong>PARTIAL</strong> — the run stopped before it finished' in page
    assert page.index('class="banner"') < page.index("<nav>")
    parser = HtmlTables()
    parser.feed(page)
    assert parser.tables == [t for s in md_sections(run).values() for t in md_tables(s)]


def test_a_stopped_run_that_then_fails_is_reported_partial_against_its_plan(stopped, tmp_path):
    run = tmp_path / "failed"
    shutil.copytree(stopped["run"], run)
    prepared = replace(prepare(stopped["config"]), run=str(run))
    ledger = RunLedger(timings={"preflight_s": 0.0, "evaluate_s": 1.0})
    units = {u.id: u for u in prepared.units}
    for item in read_committed(str(run), set(units)):  # as the driver resumes, then fails
        if isinstance(item, Segment):
            ledger.adopt(item)
        else:
            ledger.commit(item, units[item.unit_id], resumed=True)
    states = unit_states(prepared, ledger)
    write_unit_states(str(run), states)
    write_manifest(str(run), build_manifest(prepared, ledger, "failed", {}, states))
    write_report(str(run))
    banner = (run / "report.md").read_text().splitlines()[2]
    assert banner.startswith("> **PARTIAL** — the run failed: 18 unit(s) not committed. These are the figures of "
                             "what it committed: 7 of 25 planned unit(s) committed, 88 of 320 example(s) in the "
                             "figures")
    covered = table_by_header(md_sections(str(run))["Run summary"], "checkpoint", "units planned")
    assert [(r["units committed"], r["units planned"], r["examples in the figures"], r["examples planned"])
            for r in covered] == [("5", "5", "64", "64"), ("2", "5", "24", "64")] + [("0", "5", "none", "64")] * 3


def test_health_refuses_a_checkpoint_that_changed_since_the_run(runs):
    manifest = read_manifest(runs["fixed"])
    tampered = manifest.checkpoints[0].model_copy(update={"version": "size=0,mtime_ns=0"})
    with pytest.raises(InputError, match="changed since the run was planned"):
        collect_health(manifest.model_copy(update={"checkpoints": [tampered]}))


def test_a_run_limited_to_the_first_examples_says_so_above_everything_and_records_the_limit(tmp_path):
    data = make_dataset(tmp_path / "data")
    make_checkpoint(tmp_path / "sweep", steps=(1,), vocab_size=VOCAB, seq_len=SEQ_LEN, num_puzzle_identifiers=NUM_IDS)
    prepared = run_in_process(run_config([{"run": str(tmp_path / "sweep")}], str(data), str(tmp_path / "out"),
                                         dataset={"limit": 10}))
    assert sum(unit.examples for unit in prepared.units) == 10 * len(prepared.sets)
    assert read_metrics(prepared.run)["limit"] == 10
    text = (Path(prepared.run) / "report.md").read_text()
    assert ("> **LIMITED** — only the first 10 examples of each set were evaluated (dataset.limit): a quick look, "
            "not the split's figures.") in text


def test_a_run_on_a_seeded_sample_evaluates_those_examples_and_says_so_above_everything(tmp_path):
    import pyarrow.parquet as pq

    from cluster.plan import Sample

    data = make_dataset(tmp_path / "data")
    make_checkpoint(tmp_path / "sweep", steps=(1,), vocab_size=VOCAB, seq_len=SEQ_LEN, num_puzzle_identifiers=NUM_IDS)
    prepared = run_in_process(run_config([{"run": str(tmp_path / "sweep")}], str(data), str(tmp_path / "out"),
                                         dataset={"limit": 10, "sample_seed": 4}))
    metrics = read_metrics(prepared.run)
    assert (metrics["limit"], metrics["sample_seed"]) == (10, 4)
    evaluated = {}
    for part in sorted((Path(prepared.run) / "predictions").rglob("part-*.parquet")):
        set_name = part.name.split("-")[1]
        evaluated.setdefault(set_name, []).extend(pq.read_table(part).column("example_id").to_pylist())
    sizes = {"easy": 40, "hard": 24}
    assert {name: sorted(ids) for name, ids in evaluated.items()} == {
        name: Sample(seed=4, limit=10).rows(size).tolist() for name, size in sizes.items()}
    text = (Path(prepared.run) / "report.md").read_text()
    assert ("> **LIMITED** — only a seeded sample of 10 (seed 4) of each set's examples were evaluated "
            "(dataset.limit, dataset.sample_seed): a quick look, not the split's figures.") in text
