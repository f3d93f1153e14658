"""Figures 9 and 10: where the lowest- and highest-CDS features fire on their top images, in both SCC views."""
