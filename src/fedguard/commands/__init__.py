"""Subcommands of the ``fedguard`` command, one module each."""
