"""``python -m gradcam_core``: the same command line as ``gradcam`` (see :mod:`gradcam_core.cli`)."""

from .cli import main

raise SystemExit(main())
