"""How pydantic reads the core's dataclasses, which are the one description of the data: the HTTP
API's schema describes them exactly (their attribute docstrings as descriptions, nothing else in
them), and a published snapshot decodes into them (``Snapshot.from_json``, which ignores what it
does not know). No model copies them field by field."""

from __future__ import annotations

from pydantic import ConfigDict

DATA_CONFIG = ConfigDict(extra="forbid", use_attribute_docstrings=True)
