"""Test doubles that speak real wire protocols: fake LLM provider servers on loopback."""
