"""Figure 7: activation-weighted CDS of tokens across the token-norm spectrum."""
