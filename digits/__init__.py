"""Digits: a handwritten-digit recognizer served as asynchronous gRPC microservices.

This package holds what the three services share: settings, the model registry, image reading,
data sets, the model itself, and the generated gRPC stubs (``digits.v1``, written by ``make protos``).
"""


def package_version() -> str:
    """The installed package's version ("unknown" when run from a tree that was never installed)."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("digits")
    except PackageNotFoundError:
        return "unknown"
