"""Entry point for ``python -m emma``."""

from .cli import main

main()
