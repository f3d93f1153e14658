"""Table 4 and Figure 6: the CDS of every SAE feature, gamma, and the low/high-CDS partition."""
