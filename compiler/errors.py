"""Errors about the user's model: they name where (node, tensor, file) and what."""


class ModelError(ValueError):
    """A model that edgesim cannot load, lower or run, with the place the problem is."""

    def __init__(self, where: str, what: str) -> None:
        super().__init__(f"{where}: {what}")
        self.where = where
        self.what = what
