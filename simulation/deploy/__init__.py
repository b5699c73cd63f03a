"""Flower's Deployment Engine: the prepared plan, its credentials and the local launcher."""
