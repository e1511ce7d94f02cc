"""The Kafka listener: clients authenticate to the gateway, brokers see the gateway."""
