"""HTTP/1.1 as the gateway carries it: request-head checks, routing facts, error
bodies and body relays (h11 frames the bytes)."""
