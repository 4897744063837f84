"""The package version, in a module of its own: the bottom layer (disentangle.io)
records it without importing the package facade (disentangle/__init__.py)."""
__version__ = "0.1.0"
