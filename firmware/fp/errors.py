"""The one exception type of the protocol code, with a reason from a closed set."""


class ProtocolError(ValueError):
    """Bytes from the network that cannot become a protocol value; `reason` is one of fp.reasons.REASONS."""

    def __init__(self, reason: str, detail: str = ""):
        super().__init__(reason + (": " + detail if detail else ""))
        self.reason = reason
        self.detail = detail
