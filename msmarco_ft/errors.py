"""Errors a user can fix: every script turns them into one line on stderr and exit status 2."""


class InputError(Exception):
    """Bad or missing input, named by file and (when known) line."""

    def __init__(self, path, message: str, line: int | None = None):
        self.path = str(path) if path is not None else None
        self.line = line
        self.message = message
        super().__init__(str(self))

    def __str__(self) -> str:
        where = self.path or ""
        if self.line is not None:
            where = f"{where}:{self.line}"
        return f"{where}: {self.message}" if where else self.message
