"""Benchmarks for Buoy. `python -m bench.kv` runs the KV benchmark against etcd and a bare aiohttp server."""
