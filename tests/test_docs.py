"""The documentation holds together: every relative link in the Markdown resolves, and every file of
the repository that the code, configs or docs cite by path exists."""
from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
MARKDOWN = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")
# A path into the repository: a top-level folder of ours, then a file with a known extension.
CITED = re.compile(r"(?<![\w./-])((?:bassray|docs|serve|jobs|cluster|tests|bench)/[\w./-]*\w\.(?:md|py|yaml|yml|json|toml|sh))(?![\w.])")
SOURCES = [p for pattern in ("bassray/**/*.py", "bassray/**/*.yaml", "jobs/**/*.py", "serve/*.yaml",
                             "cluster/**/*.yaml", "tests/**/*.py", "README.md", "docs/*.md", "pyproject.toml")
           for p in sorted(ROOT.glob(pattern))]


def _relative_links(path: Path) -> list[str]:
    links = []
    for target in LINK.findall(path.read_text()):
        if re.match(r"^[a-z][a-z0-9+.-]*:", target) or target.startswith("#"):
            continue                                        # a URL or an anchor on the same page
        links.append(target.split("#", 1)[0])
    return links


@pytest.mark.parametrize("page", MARKDOWN, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_relative_link_resolves(page: Path):
    missing = [t for t in _relative_links(page) if not (page.parent / t).exists()]
    assert not missing, f"{page.relative_to(ROOT)} links to missing files: {missing}"


def test_every_cited_repository_file_exists():
    missing = {}
    for source in SOURCES:
        for cited in set(CITED.findall(source.read_text(errors="replace"))):
            if "*" not in cited and "<" not in cited and not (ROOT / cited).exists():
                missing.setdefault(str(source.relative_to(ROOT)), []).append(cited)
    assert not missing, f"files cited but not in the repository: {missing}"


def test_the_checks_see_links_and_citations():
    # The patterns must find what they look for, or the tests above would pass on anything.
    assert "docs/design.md" in CITED.findall("see docs/design.md, and bassray/models/harmony.py.")
    assert "bassray/models/harmony.py" in CITED.findall("(bassray/models/harmony.py)")
    assert CITED.findall("tests/data/schemas.json.gz") == []            # not a .json
    assert LINK.findall("read [the design](docs/design.md#method) first") == ["docs/design.md#method"]
    assert sum(len(_relative_links(p)) for p in MARKDOWN) > 10


def test_ci_runs_the_readme_test_command():
    """The README's setup block names one test command; `.ci/run` runs exactly that line."""
    readme = (ROOT / "README.md").read_text()
    commands = [line.split("#", 1)[0].strip() for line in readme.splitlines() if "python -m pytest -q " in line
                and line.rstrip().endswith("(CI runs exactly this)")]
    assert len(commands) == 1, "the README's setup block should give one test command marked '(CI runs exactly this)'"
    ci_lines = [line.strip() for line in (ROOT / ".ci" / "run").read_text().splitlines()]
    assert commands[0] in ci_lines, f".ci/run does not run the README's test command {commands[0]!r}"
    assert '".[test]"' in commands[0], "the test command installs the test extra"
