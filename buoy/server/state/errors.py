"""How a table refuses a command: the status and one-line reason the HTTP API returns."""


class Rejected(Exception):
    """A command that cannot apply. Raised inside ``apply``; nothing it touched stays changed."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.message = message
        self.status = status
