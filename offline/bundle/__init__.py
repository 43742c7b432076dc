"""Bundles: the connected side packs, the isolated side verifies and installs.

Import from the modules; the package itself imports nothing, so the isolated side can verify
and unpack with only the base requirements installed::

    offline.bundle.build.build(spec_path, out, key=..., max_part_size=..., since=...)
    offline.bundle.spec.load_spec(path)
    offline.bundle.sign.keygen(private_key_path)
"""
