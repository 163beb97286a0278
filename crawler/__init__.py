"""akua-crawler: move packages published in OCI registries into the Akua catalog."""

__version__ = "0.1.0"
