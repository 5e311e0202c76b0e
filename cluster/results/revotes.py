"""Votes computed again from a finished run's stored predictions, with other settings: other
pass@k, other ensembles, the other TTA vote level. No checkpoint is read and no model runs; the
dataset is read for its labels and ARC inputs, and must be the one the run evaluated.

A re-vote never touches what the run wrote: its document and files go under
`revotes/<id>/` (cluster.results.layout), and the report shows each beside the run's own votes.

    revotes/<id>/votes.json   {"format": "hrm-eval/revote", "version": 1, "id", "created_at",
                               "settings": {"voting", "tta", "ensembles"}, "votes": {...}}
                              ("votes" in the shape of metrics.json's, cluster.results.votes)
"""

from __future__ import annotations

import time
from typing import Any, Literal

from hrm import storage
from hrm.data.reader import open_dataset
from hrm.errors import InputError
from hrm.secrets import redact_document

from cluster.config import EnsembleConfig, validate_run_config
from cluster.manifest import read_manifest
from cluster.plan import check_votes
from cluster.results.layout import METRICS, REVOTES, file_uri, revote_uri
from cluster.results.metrics import read_metrics
from cluster.results.votes import apply_votes

REVOTE_FORMAT = "hrm-eval/revote"
REVOTE_VERSION = 1
REVOTE_FILE = "votes.json"


def revote(run: str, revote_id: str, *, pass_k: list[int] | None = None,
           ensembles: list[EnsembleConfig] | None = None,
           tta_level: Literal["sequence", "token"] | None = None) -> dict[str, Any]:
    """Vote again with the run's settings, changed where given; publish and return the document."""
    if not storage.exists(file_uri(run, METRICS)):
        raise InputError(f"{file_uri(run, METRICS)}: not found: votes need every unit's predictions, which only a "
                         "run that finished has (rerun it to finish it first)")
    manifest, metrics = read_manifest(run), read_metrics(run)
    doc = manifest.config.model_dump(mode="json")
    if pass_k is not None:
        doc["voting"]["pass_k"] = pass_k
    if ensembles is not None:
        doc["ensembles"] = [ensemble.model_dump(mode="json") for ensemble in ensembles]
    if tta_level is not None:
        doc["tta"]["level"] = tta_level
    config = validate_run_config(doc, source="hrm-eval vote")
    if not (config.voting.enabled or config.tta.enabled or config.ensembles):
        raise InputError(f"{run}: nothing to vote: the run has no ARC voting and no TTA, and no --ensemble was given")
    dataset = open_dataset(config.dataset.uri)
    if dataset.content_hash() != manifest.dataset["content_hash"]:
        raise InputError(f"{config.dataset.uri}: not the dataset the run evaluated (its content hash differs from "
                         f"the manifest's {manifest.dataset['content_hash'][:16]}…): votes would score other labels")
    check_votes(config, dataset, list(metrics["checkpoints"]))
    target = revote_uri(run, revote_id, REVOTE_FILE)
    if storage.exists(target):
        raise InputError(f"{target}: a re-vote with id {revote_id!r} exists: give another --id")
    votes = apply_votes(config, run, dataset, metrics, files=revote_uri(run, revote_id))["votes"]
    document = {
        "format": REVOTE_FORMAT, "version": REVOTE_VERSION, "id": revote_id,
        "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "settings": {"voting": doc["voting"], "tta": doc["tta"], "ensembles": doc["ensembles"]},
        "votes": votes,
    }
    storage.write_json_atomic(target, redact_document(document), indent=1)  # last: the re-vote's commit point
    return document


def read_revotes(run: str) -> list[dict[str, Any]]:
    """Every published re-vote of the run, oldest first."""
    names = [name for name in storage.list_files(storage.join(run, REVOTES)) if name.endswith(f"/{REVOTE_FILE}")]
    documents = [storage.read_json(storage.join(run, REVOTES, name)) for name in names]
    return sorted(documents, key=lambda d: (d["created_at"], d["id"]))
