"""Side-by-side benchmarks of avfusion and its peers (``make bench`` / ``python -m benchmarks``)."""
