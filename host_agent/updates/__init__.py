"""Updates over the air: the signed releases an agent offers and their transfers to devices (fp.ota)."""
