"""``python -m sen`` is the ``sen`` command."""

from sen.cli import main

raise SystemExit(main())
