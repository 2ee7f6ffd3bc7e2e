"""Documentation has one source per fact: the scenario reference is written from the
schema, and the docs site's pages include README's sections by name."""

import re
from pathlib import Path

from servesim.cli import main
from servesim.reference import BEGIN, END, reference_markdown, reference_rows
from servesim.scenario import SCHEMA

ROOT = Path(__file__).resolve().parent.parent


def test_readme_reference_is_the_schemas():
    readme = (ROOT / "README.md").read_text()
    block = readme[readme.index(BEGIN) + len(BEGIN) + 1:readme.index(END)]
    assert block == reference_markdown(), "README's table is stale: paste `servesim schema` between the markers"


def test_reference_lists_every_key_with_its_default():
    rows = {k: (t, d) for k, t, d, _ in reference_rows()}
    for section, keys in SCHEMA.items():
        for name, key in keys.items():
            assert (f"{section}.{name}" if section else name) in rows
    assert rows["serving.max_num_batched_tokens"] == ("int", "`-1`")
    assert rows["serving.max_wait_s"] == ("float", "`inf`")
    assert rows["output.percentiles"] == ("list", "`[50, 90, 95, 99]`")
    assert rows["workload.trace_columns"] == ("table", "`{}`")


def test_schema_command_prints_it(capsys):
    assert main(["schema"]) == 0
    assert capsys.readouterr().out == reference_markdown()
    assert main(["schema", "--format", "json"]) == 0
    import json
    schema = json.loads(capsys.readouterr().out)
    assert schema["serving.scheduler"]["choices"] == ["vllm", "prefill_first", "sglang"]
    assert schema["workload.num_requests"]["minimum"] == 1


def test_docs_pages_include_sections_that_exist():
    readme = (ROOT / "README.md").read_text()
    nav = re.findall(r":\s*(\S+\.md)\s*$", (ROOT / "mkdocs.yml").read_text(), flags=re.M)
    assert nav and all((ROOT / "docs" / page).is_file() for page in nav)
    for page in (ROOT / "docs").glob("*.md"):
        for section in re.findall(r'--8<-- "README\.md:([\w-]+)"', page.read_text()):
            assert f"<!-- --8<-- [start:{section}] -->" in readme and f"<!-- --8<-- [end:{section}] -->" in readme
