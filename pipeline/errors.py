class AsrpipeError(Exception):
    """An error the user can act on: the CLI prints its one-line message (no traceback) and exits 2."""
