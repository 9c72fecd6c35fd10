"""``python -m ponder ...`` is the ``ponder`` command, for clusters where the package is
shipped as a working dir rather than installed (no console script on PATH)."""

from ponder.cli import main

raise SystemExit(main())
