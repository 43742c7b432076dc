pytest_plugins = [
    "tests.fixtures.processes",
    "tests.fixtures.registry",
    "tests.fixtures.pyindex",
    "tests.fixtures.specs",
    "tests.fixtures.netns",
    "tests.fixtures.models",
]
