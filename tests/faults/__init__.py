"""The fault harness: the real pipeline under kills, outages and hostile input."""
