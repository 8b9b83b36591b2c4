"""The DNS interface: Consul's names over UDP and TCP, answered from a live view of the catalog."""
