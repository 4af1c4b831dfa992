"""Shared by the plugin's own test suite: the pytester fixture for driving real pytest runs."""

pytest_plugins = ("pytester",)
