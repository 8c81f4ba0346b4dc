"""The teller workstation's client library (and the ``authq-teller`` command)."""

from teller_client.client import TellerClient, TellerSessionClient, new_request

__all__ = ["TellerClient", "TellerSessionClient", "new_request"]
