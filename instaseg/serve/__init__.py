"""instaseg.serve."""
