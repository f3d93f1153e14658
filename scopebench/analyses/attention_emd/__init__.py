"""Tables 7 and 9: how far outlier and other queries move their attention under a context shift (no SAE)."""
