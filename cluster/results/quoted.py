"""Figures about other systems, quoted from their sources by the user (`output.quoted_figures`).

The report shows them in a table of their own, each with its source and labelled as quoted,
never mixed with the figures this run measured (cluster.results.model_card).
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from hrm import storage
from hrm.decode import load_yaml
from hrm.errors import InputError, invalid_input


class QuotedFigure(BaseModel):
    """A figure about another system, as its source states it: shown apart, never measured here."""

    model_config = ConfigDict(extra="forbid")

    system: str
    figure: str = Field(description="what it is, e.g. 'pass@1 on LiveCodeBench v5' or 'parameters'")
    value: str
    source: str = Field(min_length=1, description="where it is stated: a paper, a URL, a model card")


def read_quoted_figures(uri: str) -> list[dict[str, Any]]:
    """The user's file of quoted figures (YAML or JSON: a list of {system, figure, value, source})."""
    doc = load_yaml(storage.read_bytes(uri), uri)
    if not isinstance(doc, list):
        raise InputError(f"{uri}: expected a list of quoted figures, each with system, figure, value and source")
    out = []
    for i, item in enumerate(doc):
        try:
            out.append(QuotedFigure.model_validate(item).model_dump())
        except ValidationError as err:
            raise invalid_input(uri, err, within=str(i)) from None
    return out
