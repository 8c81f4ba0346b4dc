"""Nothing is shown half-checked: the dispatcher (server/dispatch.py) asks this gate
about every item it claimed, before the item is offered to anyone.

Every image of the claimed request must have a verdict from the full check (waiting
for a check in flight, or running it now after a restart). If an image failed and no
later supplement replaced it with one of the same kind, the request goes straight
back to its teller (NEEDS_SUPPLEMENT, by 'system', naming the kinds and the faults,
server/lua/image_fault.lua) and the dispatcher moves on to the next item. Unary Next
and session offers both come through the dispatcher, so both get this guarantee.
Only a verdict sends a request back: an image whose stored bytes cannot be read for
now (the center's storage failing, not the teller's capture) has none, so admit()
raises and the dispatcher puts the item back in the queue, to be checked again when
next claimed. One the store has lost goes back to the teller, said as the center's loss
(checker.LOST): nobody could decide the request without it."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence

from server.center import Center, Identity
from server.domain.reasons import NOTE_MAX_CHARS
from server.domain.records import Image
from server.images.checker import OK, ImageChecker
from server.store.queue_reads import as_text
from server.store.queue_store import Claim, QueueStore
from server.store.scripts import load_script

log = logging.getLogger(__name__)

SYSTEM = Identity(user_id="system", origin="image-check")


def unresolved_faults(images: Sequence[Image], verdicts: Sequence[str]) -> list[tuple[Image, str]]:
    """The failed images no later image of the same kind stands in for (a supplement
    answering an earlier send-back leaves the bad original in the record)."""
    faults = []
    for index, (image, verdict) in enumerate(zip(images, verdicts, strict=True)):
        replaced = any(later.kind == image.kind for later in images[index + 1 :])
        if verdict != OK and not replaced:
            faults.append((image, verdict))
    return faults


class ImageGate:
    def __init__(self, checker: ImageChecker, store: QueueStore, center: Center) -> None:
        self.checker = checker
        self.store = store
        self.center = center
        self._send_back_script = load_script(store.client, "image_fault")

    def ready(self, claim: Claim) -> bool:
        """True when every image of the claim is known to have passed its check (the
        usual case: checks end long before an item's turn), so admit() would say yes
        without waiting."""
        return all(self.checker.known(i.sha256) == OK for i in claim.record.images)

    async def admit(self, claim: Claim) -> bool:
        """True: offer the item. False: it went back to the teller (or is no longer
        this claim's), so offer nothing. Raises when a verdict could not be had (Redis
        away, or OSError: an image's bytes unreadable): the caller puts the item back."""
        images = claim.record.images
        verdicts = await asyncio.gather(*(self.checker.verdict(i.sha256) for i in images))
        faults = unresolved_faults(images, verdicts)
        if not faults:
            return True
        await self._send_back(claim, faults)
        return False

    async def _send_back(self, claim: Claim, faults: Sequence[tuple[Image, str]]) -> None:
        request_id = claim.record.request_id
        kinds = list(dict.fromkeys(image.kind for image, _ in faults))
        note = "image check failed, please capture again: " + "; ".join(
            f"{image.kind} ({image.sha256[:12]}): {fault}" for image, fault in faults
        )
        keys = self.store.keys
        audit = self.center.stage(SYSTEM, "IMAGE_CHECK_SEND_BACK", request_id,
                                  kinds=",".join(kinds), note=note[:500])  # fmt: skip
        result = await self.store.run_audited(
            self._send_back_script,
            audit,
            keys=[
                keys.request(request_id),
                keys.history(request_id),
                keys.leases,
                keys.events,
                keys.counts,
            ],
            args=[
                request_id,
                claim.token,
                note[:NOTE_MAX_CHARS],
                ",".join(kinds),
                self.store.config.events_maxlen,
            ],
        )
        status = as_text(result[0])
        if status != "OK":
            # The claim lapsed meanwhile (its lease ran out, or Redis lost it): the
            # item is someone else's to handle now, and is checked again when claimed.
            log.warning("could not send %s back for its images: %s", request_id, result)
            return
        self.center.staged()
