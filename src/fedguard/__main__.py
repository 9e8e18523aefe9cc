"""Allow ``python -m fedguard`` to behave like the ``fedguard`` command."""

from fedguard.cli import main

if __name__ == "__main__":
    main()
