"""Repository tools written in Python: the generated parts of the README (:mod:`scripts.readme`)
and of the documentation site (:mod:`scripts.docs_pages`, used by ``docs/hooks.py``)."""
