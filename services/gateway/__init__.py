"""gateway: the public entry. gRPC (Recognizer forwarded to inference, Models, Training) and HTTP."""
