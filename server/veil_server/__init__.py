"""Veil node: the service that holds the data and answers approved aggregate queries."""

__version__ = "0.1.0"
