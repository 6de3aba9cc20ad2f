"""The one error of the terms desk: a terms message refused, with the HTTP status that says so."""


class Refused(Exception):
    """A terms message refused: `status` is the HTTP status, `reason` one of fp.reasons.REASONS or 'too-many'."""

    def __init__(self, status: int, reason: str, detail: str):
        super().__init__(f"{reason}: {detail}")
        self.status = status
        self.reason = reason
        self.detail = detail
