"""``python -m streams`` is the ``avrec`` command."""

from streams.cli import main

main()
