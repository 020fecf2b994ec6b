"""The transfer engine: limits, single-flight, progress, and the copy task graph."""
