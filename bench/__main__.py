"""``python -m bench``: run every benchmark once (see :mod:`bench.run`)."""

from bench.run import main

# Guarded: `verify --bundle` may start its workers by spawn, which imports this module again.
if __name__ == "__main__":
    raise SystemExit(main())
