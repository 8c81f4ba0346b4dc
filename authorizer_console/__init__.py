"""The central authorizer's client library and console (``authq-authorizer``)."""

from authorizer_console.client import AuthorizerClient, AuthorizerSessionClient

__all__ = ["AuthorizerClient", "AuthorizerSessionClient"]
