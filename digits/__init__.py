"""Digits: a handwritten-digit recognizer served as asynchronous gRPC microservices.

This package holds what the three services share: settings, the model registry, image reading,
data sets, the model itself, and the generated gRPC stubs (``digits.v1``, written by ``make protos``).
"""
