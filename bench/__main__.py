"""``python -m bench``: run every benchmark once (see :mod:`bench.run`)."""

from bench.run import main

raise SystemExit(main())
