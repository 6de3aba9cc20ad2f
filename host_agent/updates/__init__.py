"""Updates over the air: the signed releases an agent offers and their transfers to devices (fp.ota).

Its modules, `desk` (releases, approvals, each device's update state) and `sender` (a release's
transfer to one device), are imported by path; the package re-exports nothing.
"""

__all__: list[str] = []
