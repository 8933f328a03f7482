"""``python -m netkit``."""

from netkit.cli import main

raise SystemExit(main())
