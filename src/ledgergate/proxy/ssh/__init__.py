"""SSH through the gateway: the listener, the logins on hosts, relayed channels."""
