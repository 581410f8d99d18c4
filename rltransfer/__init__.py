"""rltransfer: RL policy transfer with honest comparisons against scratch."""
