"""Evaluation: the leave-one-out protocol, the centralized reference, the popularity baseline."""
