"""Which roles may call which RPC (R13): each post sees and does only what it needs.
The servicers ask for the caller by method name; a method missing here is refused."""

from __future__ import annotations

from server.accounts.model import Role

_TELLER = frozenset({Role.TELLER})
_BRANCH = frozenset({Role.TELLER, Role.ONSITE_REVIEWER})
_AUTHORIZER = frozenset({Role.AUTHORIZER})
_SUPERVISOR = frozenset({Role.SUPERVISOR, Role.DIRECTOR})
_REVIEWER = frozenset({Role.ONSITE_REVIEWER})

RIGHTS: dict[str, frozenset[Role]] = {
    "TellerService.UploadImage": _TELLER,
    "TellerService.Submit": _TELLER,
    "TellerService.Watch": _BRANCH,
    "TellerService.Get": _BRANCH,
    "TellerService.Cancel": _TELLER,
    "TellerService.Supply": _TELLER,
    "TellerService.Session": _TELLER,
    "TellerService.ReportFallbacks": _TELLER,
    "TellerService.GetImage": _BRANCH,
    "BranchService.RequestExtendedHours": _BRANCH,
    "BranchService.ListExtendedHours": _BRANCH | _SUPERVISOR,
    "BranchService.DecideExtendedHours": _SUPERVISOR,
    "BranchService.BranchStatus": _BRANCH | _SUPERVISOR,
    "OnsiteReviewService.Pending": _REVIEWER,
    "OnsiteReviewService.Review": _REVIEWER,
    "AuthorizerService.Next": _AUTHORIZER,
    "AuthorizerService.Renew": _AUTHORIZER,
    "AuthorizerService.SetAway": _AUTHORIZER,
    "AuthorizerService.Decide": _AUTHORIZER,
    "AuthorizerService.Release": _AUTHORIZER,
    "AuthorizerService.GetImage": _AUTHORIZER,
    "AuthorizerService.Session": _AUTHORIZER,
    "SupervisorService.Overview": _SUPERVISOR,
    "SupervisorService.DeclareEmergency": _SUPERVISOR,
    "SupervisorService.EndEmergency": _SUPERVISOR,
    "SupervisorService.ListEmergencies": _SUPERVISOR,
    "SupervisorService.HandBack": _SUPERVISOR,
    "SupervisorService.Position": _SUPERVISOR,
    "SupervisorService.RequestMove": _SUPERVISOR,
    "SupervisorService.ConfirmMove": _SUPERVISOR,
    "SupervisorService.ListMoves": _SUPERVISOR,
    "SupervisorService.ListFallbacks": _SUPERVISOR,
    "SupervisorService.GetImage": _SUPERVISOR,
    "SupervisorService.WatchQueue": _SUPERVISOR,
    "SupervisorService.SetAccountEnabled": _SUPERVISOR,
}
