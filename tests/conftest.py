pytest_plugins = [
    "tests.fixtures.registry",
    "tests.fixtures.pyindex",
    "tests.fixtures.specs",
    "tests.fixtures.netns",
]
