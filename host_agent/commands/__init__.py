"""Device control: the owner's signed commands out, the device's signed acknowledgements back.

Its one module, `control`, is imported by path; the package re-exports nothing.
"""

__all__: list[str] = []
