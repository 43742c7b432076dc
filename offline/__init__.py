"""deepseek-offline: fine-tune and deploy LLMs on hosts that never touch the internet."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("deepseek-offline")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0+unknown"

__all__ = ["__version__"]
