"""`python -m framefleet`: the command line, for environments without the `framefleet` script on PATH."""

from framefleet.cli import main

main()
