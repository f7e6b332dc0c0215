"""``python -m avfusion`` is the ``avfusion`` command."""

from avfusion.cli import main

main()
