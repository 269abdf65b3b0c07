"""inference: the stateless service that holds the active model in memory and answers Recognizer calls."""
