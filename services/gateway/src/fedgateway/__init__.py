"""fedgateway: a party's front door — per-party PKI, the mutual-TLS site link, signed-message
verification, and the relay between the local broker and other parties' gateways."""
