"""``python -m service`` is the same as the ``service`` command."""

from __future__ import annotations

from .cli import main

main()
