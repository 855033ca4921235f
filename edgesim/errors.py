"""User-facing errors of the product layer (bad flags, budgets, data); the CLI prints one line."""


class UserError(ValueError):
    """Bad input from the user: a flag, file, budget or data set, with where it is."""

    def __init__(self, where: str, what: str) -> None:
        super().__init__(f"{where}: {what}")
        self.where = where
        self.what = what
