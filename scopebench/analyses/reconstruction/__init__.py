"""Table 6: SAE reconstruction quality on all tokens (A) and on outlier tokens (O)."""
