"""The Open Inference Protocol (KServe v2): the model as the protocol sees it, over gRPC and over REST."""
