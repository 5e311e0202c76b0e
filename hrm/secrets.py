"""Credentials are never written. pyarrow accepts them inside a URI (`s3://KEY:SECRET@bucket/…`,
or settings such as `?access_key=…&secret_key=…&session_token=…`), so any URI hrm-eval prints
or stores may carry them: `redact` hides them in any text, and `redact_document` in every
string of a JSON document. They are applied where text leaves the program (the CLI's error
lines, progress lines, log records, and the manifest, metrics, health and report files)."""

from __future__ import annotations

import re
from typing import Any

HIDDEN = "***"
USER_INFO = re.compile(r"(?P<scheme>\b[A-Za-z][A-Za-z0-9+.-]*://)[^/@\s?#]+@")
CREDENTIAL_SETTINGS = re.compile(
    r"(?P<key>\b(?:access_key|secret_key|session_token|aws_access_key_id|aws_secret_access_key|aws_session_token"
    r"|external_id|password|token)=)[^&\s'\"]+", re.IGNORECASE)


def redact(text: str) -> str:
    text = USER_INFO.sub(rf"\g<scheme>{HIDDEN}@", text)
    return CREDENTIAL_SETTINGS.sub(rf"\g<key>{HIDDEN}", text)


def redact_document(doc: Any) -> Any:
    """`doc` (JSON-able: dicts, lists, strings, numbers) with every string and key redacted."""
    if isinstance(doc, str):
        return redact(doc)
    if isinstance(doc, dict):
        return {redact(k) if isinstance(k, str) else k: redact_document(v) for k, v in doc.items()}
    if isinstance(doc, list | tuple):
        return [redact_document(v) for v in doc]
    return doc
