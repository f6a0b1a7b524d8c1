"""The one exception type the trainer and the LoRA tools raise for problems a user can fix.

Every message is one plain sentence that says what is wrong and what to do; `advice` may add a second,
optional hint. Anything else that escapes the trainer is a bug and is reported as such by the caller.
"""

from __future__ import annotations


class UserFacingError(Exception):
    """A problem with the user's input or machine, explained in words a non-programmer can act on."""

    def __init__(self, message: str, advice: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.advice = advice

    def __str__(self) -> str:
        return self.message if not self.advice else f"{self.message} {self.advice}"
