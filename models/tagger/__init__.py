"""Multi-label CNN tagging of SAXS detector images."""
