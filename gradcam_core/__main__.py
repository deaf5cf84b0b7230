"""``python -m gradcam_core``: the command line (see :mod:`gradcam_core.cli`)."""

from .cli import main

raise SystemExit(main())
