"""`python -m gdlab ...` is the `gdlab` command."""

from gdlab.cli import main

main()
