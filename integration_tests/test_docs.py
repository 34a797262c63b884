"""The user's pages: every relative link resolves, the README stays short and starts with what
CI runs, and the options reference is what its generator writes from the code."""
from __future__ import annotations

import re
from pathlib import Path
from typing import List, Set, Tuple

import pytest

from conftest import ROOT

PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md")),
         ROOT / "results" / "strong_val" / "README.md"]
README_LIMIT = 10 * 1024
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)\)")
FENCE = re.compile(r"^```.*?^```", re.S | re.M)
CODE_SPAN = re.compile(r"`[^`\n]*`")


def prose(text: str) -> str:
    """``text`` without fenced code blocks and code spans (links there are not links)."""
    return CODE_SPAN.sub("", FENCE.sub("", text))


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def anchors(page: Path) -> Set[str]:
    """The anchors of ``page``'s headings (a repeated heading gets -1, -2, ... as on GitHub)."""
    seen: Set[str] = set()
    for line in FENCE.sub("", page.read_text(encoding="utf-8")).splitlines():
        match = re.match(r"#{1,6}\s+(.*)", line)
        if match:
            base = slug(match.group(1))
            name, n = base, 0
            while name in seen:
                n += 1
                name = f"{base}-{n}"
            seen.add(name)
    return seen


def relative_links(page: Path) -> List[Tuple[str, Path, str]]:
    """(link, target path, anchor) of every link of ``page`` that is not to a web address."""
    links = []
    for target in LINK.findall(prose(page.read_text(encoding="utf-8"))):
        if re.match(r"[a-z]+:", target):
            continue
        path, _, anchor = target.partition("#")
        links.append((target, (page.parent / path).resolve() if path else page, anchor))
    return links


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_relative_link_resolves(page):
    assert page.is_file()
    broken = [link for link, path, _ in relative_links(page) if not path.exists()]
    assert not broken, f"{page.relative_to(ROOT)} links to missing files: {broken}"
    missing = [link for link, path, anchor in relative_links(page)
               if anchor and path.suffix == ".md" and anchor not in anchors(path)]
    assert not missing, f"{page.relative_to(ROOT)} links to missing headings: {missing}"


def test_the_link_checker_sees_files_and_headings(tmp_path):
    (tmp_path / "a.md").write_text("# Weights & Biases\n## The paper's claim\n```\n# not a heading\n```\n")
    assert anchors(tmp_path / "a.md") == {"weights--biases", "the-papers-claim"}
    (tmp_path / "b.md").write_text("[x](a.md#the-papers-claim) `[y](nowhere.md)` [z](https://e.org) "
                                   "![p](c.png)\n")
    assert [(link, anchor) for link, _, anchor in relative_links(tmp_path / "b.md")] == [
        ("a.md#the-papers-claim", "the-papers-claim"), ("c.png", "")]


def test_readme_is_short_and_starts_with_what_ci_runs():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert len(readme.encode("utf-8")) <= README_LIMIT
    blocks = re.findall(r"^```bash\n(.*?)\n```", readme, re.S | re.M)
    setup, tests = blocks[0].split(" && "), blocks[1]
    ci = [line.replace("pip install -q", "pip install") for line in (ROOT / ".ci" / "run").read_text().splitlines()
          if line.startswith((".venv/", "python3 -m venv"))]
    assert readme.index(blocks[0]) < readme.index("\n## ")
    assert setup[:-1] == ci[:-1] and tests == ci[-1]
    assert setup[-1] == ".venv/bin/python -m r2d2_plugin.cli.train --c configs/r2d2_digits_40.yaml"


def test_options_reference_is_what_the_code_generates():
    from r2d2_plugin.tools.options_doc import render

    committed = (ROOT / "docs" / "options.md").read_text(encoding="utf-8")
    assert committed == render(), ("docs/options.md is out of date: run "
                                   "python -m r2d2_plugin.tools.options_doc --out docs/options.md")
