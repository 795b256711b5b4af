"""The command line: `gdlab COMMAND`. One module per family of commands; importing this
package registers them all on the `cli` group."""

from gdlab.cli import data, descend, explore, fit, pictures, rates  # noqa: F401  (they register)
from gdlab.cli.app import cli, main

__all__ = ["cli", "main"]
