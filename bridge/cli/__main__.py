"""`python -m bridge.cli`, as `python -m bridge`."""

from bridge.cli import main

main()
