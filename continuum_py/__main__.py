"""``python -m continuum_py`` runs the ``continuum`` command."""

from __future__ import annotations

import sys

from continuum_py.cli import main

sys.exit(main())
