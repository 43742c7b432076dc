"""``offline serve``: a local FastAPI server for exported models (``/predict``, the OpenAI
completions and chat APIs, health, Prometheus metrics), with API keys, micro-batching, a canary
split and an audit log."""

from offline.serve.app import create_app, load_models, serve
from offline.serve.auth import KeyStore, add_key
from offline.serve.models import ServedModel, load_model, verify_manifest
from offline.serve.settings import ServeSettings

__all__ = [
    "KeyStore",
    "ServeSettings",
    "ServedModel",
    "add_key",
    "create_app",
    "load_model",
    "load_models",
    "serve",
    "verify_manifest",
]
