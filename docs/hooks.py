"""mkdocs hook: the generated parts of the pages and the published figures.

- ``on_files``: every PNG under ``benchmarks/results/`` (outside ``runs/``) becomes a site file
  under ``assets/results/`` (read where it lies, never copied into ``docs/``);
- ``on_page_markdown``: a marker line ``<!-- generated: NAME [ARG] -->`` becomes the part
  :func:`scripts.docs_pages.expand` builds from the repository (results, speed, the bad-input
  table, the config schema, CONTRIBUTING.md);
- ``on_page_content``: the Sphinx roles of the docstrings (``:func:`` ...) are dropped from the
  rendered API pages, leaving the code span.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

from mkdocs.structure.files import File

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from scripts import docs_pages  # noqa: E402  (after the repository root is on the path)

ROLE = re.compile(r":(?:func|class|meth|mod|attr|data|exc):(?=<code>)")


def on_files(files, config):
    for path, site_path in docs_pages.figures():
        files.append(File.generated(config, site_path, abs_src_path=str(path)))
    return files


def on_page_markdown(markdown, page, config, files):
    return docs_pages.expand(markdown, page.file.src_uri)


def on_page_content(html, page, config, files):
    return ROLE.sub("", html)
