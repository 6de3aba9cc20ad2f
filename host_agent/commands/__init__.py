"""Device control: the owner's signed commands out, the device's signed acknowledgements back."""
