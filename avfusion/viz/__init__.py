"""Visualisation: overlays, BEV, occupancy renders, the HTML QA report and rerun export."""
