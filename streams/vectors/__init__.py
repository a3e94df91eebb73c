"""Vector storage: Milvus (Lite locally, standalone in production) behind one client factory."""
