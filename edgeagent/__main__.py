"""``python -m edgeagent`` → :func:`edgeagent.cli.main`."""

from edgeagent.cli import main

raise SystemExit(main())
