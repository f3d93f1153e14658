"""Tables 3 and 8, Figure 8: linear probes on tokens with each CDS feature group removed."""
