"""User-facing errors: one line that names the problem and the fix.

Library code raises :class:`UserError` for anything the user can correct (bad path, bad file,
mismatching cache, ...). The CLI prints ``error: <problem> Fix: <fix>`` and exits with code 2,
without a traceback. Programming errors stay ordinary exceptions.
"""

from __future__ import annotations


class UserError(Exception):
    """A problem with the user's input, with the fix spelled out.

    Args:
        problem: what is wrong, naming the offending file, key, field or value.
        fix: what to do about it (a flag to pass, a file to put somewhere, ...).
    """

    def __init__(self, problem: str, fix: str = ""):
        self.problem = problem.rstrip(".")
        self.fix = fix.rstrip(".")
        super().__init__(self.one_line())

    def one_line(self) -> str:
        msg = f"{self.problem}."
        if self.fix:
            msg += f" Fix: {self.fix}."
        return " ".join(msg.split())  # always a single line
