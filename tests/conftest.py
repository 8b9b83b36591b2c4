"""What every test runs under."""

import os

# The processes the tests start (agents, the CLI, proxies) hold to the suite's rule (pyproject.toml's
# filterwarnings): a deprecation warning, Python's or aiohttp's, is an error rather than a line on stderr.
os.environ["PYTHONWARNINGS"] = ",".join([
    "error::DeprecationWarning",
    "error::PendingDeprecationWarning",
    "error::aiohttp.web_app.NotAppKeyWarning",
])
