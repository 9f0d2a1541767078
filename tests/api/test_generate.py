"""Generated files: the committed CRD and docs equal what the models produce, and are lint-clean."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from crossfade.api import generate
from crossfade.api.crd import PRINTER_COLUMNS, build_crd, render_crd
from crossfade.api.docs import render_docs
from crossfade.api.schema import SchemaError, structural_schema
from crossfade.api.yaml_writer import LINE_MAX_CHARS, dump_document
from tests.api.samples import REPO_ROOT

YAMLLINT = REPO_ROOT / ".venv" / "bin" / "yamllint"


def _walk(node: dict[str, Any], path: str = "") -> list[tuple[str, dict[str, Any]]]:
    out = [(path, node)]
    for name, child in node.get("properties", {}).items():
        out += _walk(child, f"{path}.{name}")
    if "items" in node:
        out += _walk(node["items"], f"{path}[]")
    return out


def _version() -> dict[str, Any]:
    versions: list[dict[str, Any]] = build_crd()["spec"]["versions"]
    return versions[0]


@pytest.mark.parametrize("relative", sorted(str(p) for p in generate.generated_files()))
def test_committed_file_equals_generated(relative: str) -> None:
    committed = (REPO_ROOT / relative).read_text(encoding="utf-8")
    assert committed == generate.generated_files()[Path(relative)], (
        f"{relative} is stale: run `make crds` and commit the result"
    )


def test_check_mode_reports_drift(tmp_path: Path) -> None:
    assert generate.main(["--root", str(tmp_path)]) == 0
    assert generate.main(["--root", str(tmp_path), "--check"]) == 0
    crd = tmp_path / generate.CRD_PATH
    crd.write_text(crd.read_text() + "# edited by hand\n")
    assert generate.main(["--root", str(tmp_path), "--check"]) == 1


def test_rendering_is_deterministic() -> None:
    assert render_crd() == render_crd()
    assert render_docs() == render_docs()


def test_yaml_reads_back_as_the_built_crd() -> None:
    assert list(yaml.safe_load_all(render_crd())) == [build_crd()]


def test_no_line_passes_the_width_unless_it_is_one_word() -> None:
    for line in render_crd().splitlines():
        if len(line) > LINE_MAX_CHARS:
            assert " " not in line.strip().removeprefix("- "), line


@pytest.mark.skipif(not YAMLLINT.exists() and not shutil.which("yamllint"), reason="no yamllint")
def test_yamllint_strict_accepts_crds_and_examples() -> None:
    binary = str(YAMLLINT) if YAMLLINT.exists() else "yamllint"
    result = subprocess.run(
        [binary, "-s", "crds", "examples"],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_string_and_list_is_bounded() -> None:
    schema = _version()["schema"]["openAPIV3Schema"]
    for path, node in _walk(schema["properties"]["spec"], "spec") + _walk(
        schema["properties"]["status"], "status"
    ):
        if node.get("type") == "string":
            assert "maxLength" in node or "enum" in node, path
        if node.get("type") == "array":
            assert "maxItems" in node, path


def test_every_field_is_described() -> None:
    schema = _version()["schema"]["openAPIV3Schema"]
    for path, node in _walk(schema["properties"]["spec"], "spec"):
        if not path.endswith("[]"):
            assert node.get("description"), path


def test_lists_of_objects_are_maps_keyed_by_name() -> None:
    spec = _version()["schema"]["openAPIV3Schema"]["properties"]["spec"]
    placements = spec["properties"]["placements"]
    assert placements["x-kubernetes-list-type"] == "map"
    assert placements["x-kubernetes-list-map-keys"] == ["name"]
    assert placements["maxItems"] == 8
    status = _version()["schema"]["openAPIV3Schema"]["properties"]["status"]
    assert status["properties"]["conditions"]["x-kubernetes-list-map-keys"] == ["type"]
    assert status["properties"]["history"]["maxItems"] == 20


def test_crd_names_subresource_and_columns() -> None:
    crd = build_crd()
    names = crd["spec"]["names"]
    assert names["shortNames"] == ["cfpool"]
    assert names["categories"] == ["crossfade"]
    assert crd["metadata"]["name"] == "inferencepools.crossfade.dev"
    assert _version()["subresources"] == {"status": {}}
    columns = [c["name"] for c in _version()["additionalPrinterColumns"]]
    assert columns == ["Active", "Ready", "Degraded", "Healthy", "LastFailover", "Age"]
    assert len(PRINTER_COLUMNS) == len(columns)


def test_cel_rules_carry_messages() -> None:
    rules = [
        rule
        for _, node in _walk(_version()["schema"]["openAPIV3Schema"])
        for rule in node.get("x-kubernetes-validations", [])
    ]
    assert len(rules) >= 15
    assert all(rule["message"] and ":" in rule["message"] for rule in rules)
    assert any("oldSelf" in rule["rule"] for rule in rules)


def test_docs_cover_every_spec_field() -> None:
    docs = render_docs()
    spec = _version()["schema"]["openAPIV3Schema"]["properties"]["spec"]
    for path, _node in _walk(spec, "spec"):
        if path.endswith("[]") or path == "spec":
            continue
        assert f"| `{path.rsplit('.', 1)[-1].removesuffix('[]')}` |" in docs, path
    assert "inferencepools.crossfade.dev" in docs
    assert "self.min <= self.max" in docs


def test_schema_conversion_rejects_unbounded_strings() -> None:
    from pydantic import BaseModel, Field

    class Unbounded(BaseModel):
        text: str = Field(description="no bound")

    with pytest.raises(SchemaError, match="max_length"):
        structural_schema(Unbounded, path="x")


def test_writer_folds_long_strings_and_round_trips() -> None:
    long_words = " ".join(["x"] * 60)
    document = {"a": {"b": [long_words, {"c": "w: " * 30 + "end", "d": []}], "e": {}, "f": True}}
    text = dump_document(document)
    assert list(yaml.safe_load_all(text)) == [document]
    assert all(len(line) <= LINE_MAX_CHARS for line in text.splitlines())


def test_writer_keeps_strings_it_cannot_fold_exact() -> None:
    document = {"k": "trailing space " * 8, "n": "two  spaces " * 8}
    assert list(yaml.safe_load_all(dump_document(document))) == [document]
