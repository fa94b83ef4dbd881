"""``python -m e5v ...`` is the ``e5v`` command (useful where the script is not on PATH, e.g. ``py -m``)."""

from .cli import main

if __name__ == "__main__":
    main()
