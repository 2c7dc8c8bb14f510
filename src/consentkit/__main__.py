"""``python -m consentkit``: the command line (see :mod:`consentkit.cli`)."""

from consentkit.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
