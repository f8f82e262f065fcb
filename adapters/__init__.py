"""Journal adapters, importable as ``continuum_py.adapters.<name>``.

Each module imports its driver; nothing here is imported by ``continuum_py``
itself until a URL asks for it.
"""

from __future__ import annotations
