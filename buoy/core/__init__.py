"""Consul's vocabulary, at the bottom of the house: errors as kinds, the replicated commands, SPIFFE IDs and
``structs/`` (one module per Consul object: its fields, validation and API encoding).

``core`` imports only the standard library and ``buoy.durations``; every other Buoy package may import it.
"""
