"""What every test runs under."""

import os

# The processes the tests start (agents, the CLI, proxies) hold to the suite's rule (pyproject.toml's
# filterwarnings): a deprecation warning is an error rather than a line on stderr. (aiohttp's untyped
# app-key warning is left to pyproject: naming its class here would make every Python child import aiohttp.)
os.environ["PYTHONWARNINGS"] = "error::DeprecationWarning,error::PendingDeprecationWarning"
