"""`python -m jaxlayer ...` runs the jaxlayer command."""

from jaxlayer.cli import main

main()
