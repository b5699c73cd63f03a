"""The report schema: derived from the TypedDicts, published in docs/, fully documented."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import pytest

from fedpers.privacy.audit.report import SCHEMA_VERSION, VERDICT_IDS
from fedpers.privacy.audit.schema import report_schema, schema_text

ROOT = Path(__file__).resolve().parents[3]


def test_published_schema_matches_code() -> None:
    published = (ROOT / "docs" / "report.schema.json").read_text(encoding="utf-8")
    assert published == schema_text(), (
        "docs/report.schema.json is stale: run "
        '`.venv/bin/python -c "from fedpers.privacy.audit import write_schema; '
        "write_schema('docs/report.schema.json')\"`"
    )


def test_schema_is_valid_draft_2020_12() -> None:
    jsonschema.Draft202012Validator.check_schema(report_schema())


def test_every_field_is_described() -> None:
    schema = report_schema()
    objects = [("AuditReport", schema), *schema["$defs"].items()]
    for name, obj in objects:
        assert obj["description"], name
        for key, prop in obj["properties"].items():
            assert prop.get("description"), f"{name}.{key} has no description"


def test_schema_rejects_unknown_keys_and_other_major_versions() -> None:
    validator = jsonschema.Draft202012Validator(report_schema())
    verdict_schema = {**report_schema(), "$ref": "#/$defs/Verdict"}
    verdict_schema.pop("properties")
    verdict_schema.pop("required")
    verdict_schema.pop("additionalProperties")
    verdict_schema.pop("type")
    verdict = {"id": VERDICT_IDS[0], "title": "t", "status": "pass", "summary": "s"}
    jsonschema.validate(verdict, verdict_schema)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({**verdict, "extra": 1}, verdict_schema)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({**verdict, "status": "maybe"}, verdict_schema)
    errors = {e.path[0] for e in validator.iter_errors({"schema_version": "2.0.0"}) if e.path}
    assert "schema_version" in errors
    assert SCHEMA_VERSION.startswith("1.")
    json.dumps(report_schema(), allow_nan=False)
