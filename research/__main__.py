"""Entry point for ``python -m research``."""

from .cli import main

main()
