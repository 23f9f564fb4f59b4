"""Write the registries' tables (tasks, datasets, cells) into the docs, between markers.

    .venv/bin/python scripts/gen_docs_tables.py          # rewrite docs/*.md where a table is out of date
    .venv/bin/python scripts/gen_docs_tables.py --check  # exit 1 (and name the files) if any is out of date

A page asks for a table with a pair of markers, and the script replaces whatever stands between them:

    <!-- registry:tasks -->      the table of the registered tasks (also: datasets, cells)
    <!-- /registry:tasks -->

and for a list inside a sentence or a table cell, ``<!-- registry:data:list -->...<!-- /registry:data:list -->``
(also ``task:list``, ``model:list``: the option names of config group data, task, model). Everything comes from
``rnnlab.registry`` (``rnnlab.specs.docs_table``, ``registry_options``): add a task or a dataset, run this script,
and the docs list it. tests/test_registry.py fails while the committed docs differ from what it writes.
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PAGES = sorted((ROOT / "docs").glob("*.md"))
MARKER = re.compile(r"<!-- registry:([a-z]+(?::list)?) -->(.*?)<!-- /registry:\1 -->", re.DOTALL)


def generated(what: str) -> str:
    """The text that belongs between the markers of ``what``."""
    from rnnlab.specs import docs_table, registry_options

    if what.endswith(":list"):
        return registry_options(what.partition(":")[0], code=True)
    return f"\n{docs_table(what)}\n"


def render(text: str) -> str:
    """``text`` with every marked table or list regenerated."""
    return MARKER.sub(lambda m: f"<!-- registry:{m.group(1)} -->{generated(m.group(1))}<!-- /registry:{m.group(1)} -->",
                      text)  # fmt: skip


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="change nothing; exit 1 if a page is out of date")
    args = parser.parse_args()
    stale = []
    for page in PAGES:
        text = page.read_text(encoding="utf-8")
        new = render(text)
        if new != text:
            stale.append(page)
            if not args.check:
                page.write_text(new, encoding="utf-8")
    for page in stale:
        print(f"{'out of date' if args.check else 'rewrote'}: {page.relative_to(ROOT)}")
    return 1 if stale and args.check else 0


if __name__ == "__main__":
    sys.exit(main())
