"""The built-in mTLS sidecar proxy (``buoy connect proxy``): a public listener that admits only the peers
intentions allow, and upstream listeners that open mutual TLS to a healthy instance of a destination."""
