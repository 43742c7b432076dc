"""``offline serve``: a local FastAPI server for exported models (``/predict``, the OpenAI
completions and chat APIs, health, Prometheus metrics), with API keys, micro-batching, a canary
split and an audit log.

Import from the modules (the package imports nothing, so importing one module of it does not
load FastAPI)::

    offline.serve.app.serve(settings)                 # the server, as `offline serve` runs it
    offline.serve.app.create_app(settings, models)    # the ASGI app
    offline.serve.app.load_models(settings)           # the export directories, verified
    offline.serve.models.load_model(directory)        # one export, verified and loaded
    offline.serve.models.verify_manifest(directory)
    offline.serve.auth.KeyStore / add_key             # API keys (hashed at rest)
    offline.serve.settings.ServeSettings              # options and OFFLINE_SERVE_*
"""
