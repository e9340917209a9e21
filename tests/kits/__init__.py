"""Shared test fakes and fixtures data, imported by the test modules (tests import kits, never each other)."""
