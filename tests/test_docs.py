"""The documentation's examples run: every ```python block of README.md and docs/*.md, page by page in one
namespace (as a reader would paste them in order). A block right after a ``<!-- not run: reason -->`` line is
skipped (it needs the reader's own model or data); the reason is part of the page's source."""

from __future__ import annotations

import pathlib
import re
import textwrap

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
BLOCK = re.compile(r"(<!-- not run: [^>]*-->\n[ ]*)?```python\n(.*?)```", re.DOTALL)


def blocks(page: pathlib.Path) -> list[str]:
    return [textwrap.dedent(code) for skip, code in BLOCK.findall(page.read_text()) if not skip]


def test_every_page_is_found_and_has_its_examples_checked():
    assert len(PAGES) >= 10
    assert sum(len(blocks(p)) for p in PAGES) >= 5


@pytest.mark.parametrize("page", [p for p in PAGES if blocks(p)], ids=lambda p: p.name)
def test_examples_run(both_backends, page, tmp_path, monkeypatch):
    from .zoo_support import import_torchvision

    import_torchvision()  # torchvision's model zoo importable as the examples write it
    monkeypatch.chdir(tmp_path)  # examples that write files write them here
    namespace: dict = {"__name__": f"docs_{page.stem}"}
    for i, code in enumerate(blocks(page)):
        try:
            exec(compile(code, f"{page.name} block {i + 1}", "exec"), namespace)  # noqa: S102 - running the docs is the test
        except Exception as e:  # noqa: BLE001 - reported with the page and block
            pytest.fail(f"{page.name}, python block {i + 1} fails: {type(e).__name__}: {e}\n{code}")
