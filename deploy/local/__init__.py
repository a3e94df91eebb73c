"""The embedded local stack: real Kafka (KRaft), Triton and Milvus Lite on loopback.

``avrec stack up|down|status|logs`` drives :mod:`deploy.local.stack`.
"""
