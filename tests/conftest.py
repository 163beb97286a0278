pytest_plugins = ["tests.plugins.registry", "tests.plugins.akua"]
