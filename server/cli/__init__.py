"""The `fedpers serve` command line."""
