"""``python -m mirage`` is the same as the ``mirage`` command."""

from mirage.cli import main

raise SystemExit(main())
