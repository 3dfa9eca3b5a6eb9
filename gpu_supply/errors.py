"""Errors a user can fix: each names the field at fault and how to fix it, in one line."""

from __future__ import annotations


class UserError(Exception):
    """Bad input. The CLI prints ``error: <field>: <problem> (<fix>)`` and exits 2."""

    def __init__(self, field: str, problem: str, fix: str | None = None) -> None:
        self.field = field
        self.problem = problem
        self.fix = fix
        super().__init__(self.line())

    def line(self) -> str:
        return f"{self.field}: {self.problem}" + (f" ({self.fix})" if self.fix else "")
