"""Kafka protocol codecs: frames, messages, record batches and SASL (sans-IO)."""
