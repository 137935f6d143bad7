"""``python -m hvmem`` runs the command-line interface."""

from hvmem.ui.cli import main

main()
