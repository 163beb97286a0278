"""Akua's packages API, as the crawler uses it."""
