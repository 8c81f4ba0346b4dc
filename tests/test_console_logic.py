"""The console's logic, headless: state and keys, what an item shows, the image view's
maths, the supervisor view's rows and charts, and the network worker against a real
server (its own thread and loop, as under Tk)."""

from __future__ import annotations

import asyncio
import queue
import time

import pytest
from authq.v1 import authorizer_pb2 as apb
from authq.v1 import common_pb2 as cpb
from authq.v1 import supervisor_pb2 as spb
from PIL import Image

from authorizer_console.charts import bar_chart, wait_chart
from authorizer_console.console_state import ConsoleState, Form, Phase
from authorizer_console.image_view import ImageView, decode, thumbnail
from authorizer_console.item_view import ItemView, duration
from authorizer_console.messages import (
    ActionDone,
    ActionRefused,
    AwayChanged,
    Connected,
    Connecting,
    Credit,
    Decide,
    Event,
    ImageReady,
    LeaseLost,
    LoginFailed,
    OfferArrived,
    Release,
    SetAway,
    SnapshotArrived,
)
from authorizer_console.supervisor_state import SupervisorState
from authorizer_console.worker import Worker
from server.accounts.model import Role
from teller_client import synthetic
from tests.conftest import PASSWORD, RunningServer
from tests.helpers import request


def count_of(image: Image.Image, color: tuple[int, int, int]) -> int:
    return sum(n for n, c in image.getcolors(maxcolors=1 << 20) or [] if c == color)


def colors(image: Image.Image) -> set[object]:
    return {color for _, color in image.getcolors(maxcolors=1 << 20) or []}


def rgb(image: Image.Image, xy: tuple[int, int]) -> tuple[int, int, int]:
    r, g, b = image.convert("RGB").getpixel(xy)  # type: ignore[misc]
    return int(r), int(g), int(b)


def phase(console: ConsoleState) -> Phase:
    """Read through a call: mypy would otherwise keep the phase narrowed by an
    earlier assert across the calls that change it."""
    return console.phase


def form(console: ConsoleState) -> Form:
    return console.form


def offer(request_id: str = "req-00000001", token: int = 7, *, reviewed: bool = False) -> apb.Offer:
    view = cpb.RequestView(
        request_id=request_id,
        state=cpb.REQUEST_STATE_CLAIMED,
        branch_id="branch-1",
        teller_id="teller-1",
        transaction=cpb.Transaction(
            business_type="CASH_WITHDRAWAL",
            amount=cpb.Money(minor_units=1_200_050, currency="CNY"),
            account="6222020200001234",
            customer_name="Zhang San",
        ),
        importance=3,
        urgency=cpb.URGENCY_URGENT,
        submitted_at_ms=1_000_000,
        images=[
            cpb.ImageRef(kind=cpb.IMAGE_KIND_ID_FRONT, sha256="a" * 64),
            cpb.ImageRef(kind=cpb.IMAGE_KIND_VOUCHER, sha256="b" * 64),
        ],
    )
    if reviewed:
        view.history.add(event="ONSITE_CONFIRMED", actor="reviewer-1",
                         note="checked: CASH_RECOUNTED", at_ms=1_000_500)  # fmt: skip
    view.history.add(
        event="SUPPLEMENT_REQUESTED", actor="authorizer-2", at_ms=1_010_000,
        requested_kinds=[cpb.IMAGE_KIND_CUSTOMER_PHOTO], note="the customer, please",
    )  # fmt: skip
    view.history.add(event="SUPPLIED", actor="teller-1", at_ms=1_020_000)
    return apb.Offer(
        request=view,
        lease=apb.Lease(request_id=request_id, fencing_token=token, expires_at_ms=2_000_000),
    )


def connected_console() -> ConsoleState:
    console = ConsoleState()
    assert console.handle(Connected("authorizer-1", ("AUTHORIZER",))) == [Credit()]
    assert phase(console) is Phase.WAITING
    return console


def with_item(request_id: str = "req-00000001") -> ConsoleState:
    console = connected_console()
    assert console.handle(OfferArrived(offer(request_id))) == []
    assert phase(console) is Phase.ITEM
    return console


# -- what an item shows -----------------------------------------------------------


def test_item_shows_names_amount_masked_account_mode_and_rounds() -> None:
    item = ItemView.from_offer(offer(reviewed=True))
    rows = dict(item.detail_lines(now_ms=1_125_000))
    assert rows["Business"] == "现金取款 / Cash withdrawal  [CASH_WITHDRAWAL]"
    assert rows["Amount"] == "12,000.50 CNY"
    assert rows["Account"] == "6222********1234"
    assert rows["Mode"] == "ONSITE_REVIEW_THEN_CENTRAL"
    assert rows["On-site review"] == "reviewer-1: checked: CASH_RECOUNTED"
    assert rows["Waited"].startswith("2 min 05 s")
    assert rows["Priority"] == "importance 3  URGENT"
    assert "authorizer-2 asked for Customer at the counter: the customer, please" in rows["Round 1"]
    assert "supplied" in rows["Round 1"]
    assert [slot.kind for slot in item.images] == ["ID_FRONT", "VOUCHER"]
    assert ItemView.from_offer(offer()).mode == "DIRECT_CENTRAL"


def test_durations_read_naturally() -> None:
    assert duration(12_400) == "12 s"
    assert duration(185_000) == "3 min 05 s"
    assert duration(7_620_000) == "2 h 07 min"
    assert duration(-5) == "0 s"


# -- keys and state ---------------------------------------------------------------


def test_approve_needs_a_confirming_enter() -> None:
    console = with_item()
    assert console.key("a") == []
    assert form(console) is Form.CONFIRM_APPROVE
    assert console.key("Return") == [Decide("req-00000001", 7, "approve")]
    assert phase(console) is Phase.ACTING
    # While the decision travels, a second press does nothing.
    assert console.key("a") == []
    update = cpb.RequestUpdate(request_id="req-00000001", state=cpb.REQUEST_STATE_APPROVED)
    assert console.handle(ActionDone("decide", "req-00000001", "APPROVED", update)) == [Credit()]
    assert console.item is None
    assert phase(console) is Phase.WAITING
    assert console.notice.level == "ok"
    assert "APPROVED" in console.notice.text
    assert console.decided == 1


def test_escape_or_another_key_leaves_the_approve_prompt() -> None:
    console = with_item()
    console.key("a")
    assert console.key("Escape") == []
    assert form(console) is Form.NONE
    assert console.key("Return") == []


def test_a_rejection_without_a_reason_is_impossible() -> None:
    console = with_item()
    console.key("r")
    assert form(console) is Form.REJECT
    assert console.submit_reject("", "looks wrong") == []
    assert console.notice.level == "error"
    assert "R5" in console.notice.text
    assert console.submit_reject("NOT_A_REASON", "") == []
    assert console.submit_reject("OTHER", "   ") == []
    assert "note" in console.notice.text
    assert phase(console) is Phase.ITEM
    commands = console.submit_reject("ID_MISMATCH", " photo differs ")
    assert commands == [Decide("req-00000001", 7, "reject", "ID_MISMATCH", "photo differs")]
    assert form(console) is Form.NONE


def test_ask_for_images_needs_a_kind() -> None:
    console = with_item()
    console.key("s")
    assert form(console) is Form.ASK
    assert console.submit_ask([], "clearer please") == []
    assert "kind" in console.notice.text
    commands = console.submit_ask(["VOUCHER", "ID_FRONT"], "blurred")
    assert commands == [
        Decide("req-00000001", 7, "ask", note="blurred", kinds=("ID_FRONT", "VOUCHER"))
    ]


def test_a_refused_action_shows_the_servers_message_and_keeps_the_item() -> None:
    console = with_item()
    console.key("a")
    console.key("Return")
    message = "authorizer-1 may not decide CASH_WITHDRAWAL above its ceiling"
    assert (
        console.handle(ActionRefused("decide", "req-00000001", "PERMISSION_DENIED", message)) == []
    )
    assert phase(console) is Phase.ITEM
    assert console.item is not None
    assert console.notice.level == "error"
    assert message in console.notice.text
    assert "PERMISSION_DENIED" in console.notice.text


def test_a_lost_lease_closes_the_item_and_asks_for_the_next() -> None:
    console = with_item()
    console.key("a")
    console.key("Return")
    refused = ActionRefused("decide", "req-00000001", "ABORTED", "stale fencing token")
    assert console.handle(refused) == [Credit()]
    assert console.item is None
    console.handle(OfferArrived(offer("req-00000002")))
    assert console.handle(LeaseLost("req-00000002")) == [Credit()]
    assert console.item is None
    assert "lease lost" in console.notice.text


def test_an_item_taken_away_says_by_whom_and_why() -> None:
    console = with_item()
    withdrawal = cpb.RequestUpdate(
        request_id="req-00000001", state=cpb.REQUEST_STATE_SENT_BACK, event="LOCAL_FALLBACK",
        actor="teller-7", note="authorized on site as a local fallback (R8)",
    )  # fmt: skip
    assert console.handle(LeaseLost("req-00000001", withdrawal)) == [Credit()]
    assert console.item is None
    assert console.notice.level == "error"
    text = console.notice.text
    assert "LOCAL_FALLBACK by teller-7" in text
    assert "SENT_BACK" in text
    assert "authorized on site" in text
    assert "back in the queue" not in text


def test_hand_back_and_away() -> None:
    console = with_item()
    assert console.key("h") == [Release("req-00000001", 7, "handed back")]
    assert console.key("w") == [SetAway(True)]
    console.handle(AwayChanged(True))
    update = cpb.RequestUpdate(request_id="req-00000001", state=cpb.REQUEST_STATE_QUEUED)
    assert console.handle(ActionDone("release", "req-00000001", "handed back", update)) == [
        Credit()
    ]
    assert phase(console) is Phase.AWAY
    assert console.key("W") == [SetAway(False)]
    console.handle(AwayChanged(False))
    assert phase(console) is Phase.WAITING


def test_disconnect_keeps_the_open_item_and_reconnect_credits_once() -> None:
    console = with_item()
    console.handle(Connecting(1, 2.0, "socket closed"))
    assert "retrying in 2 s" in console.connection
    assert phase(console) is Phase.ITEM
    assert console.key("w") == []  # not connected
    # Reconnected with the item still open: no credit until it is decided.
    assert console.handle(Connected("authorizer-1", ("AUTHORIZER",))) == []
    idle = connected_console()
    idle.handle(Connecting(1, 0.5, "gone"))
    assert phase(idle) is Phase.CONNECTING
    assert idle.handle(Connected("authorizer-1", ("AUTHORIZER",))) == [Credit()]
    # Only one credit out at a time.
    assert idle.handle(Connected("authorizer-1", ("AUTHORIZER",))) == []


def test_login_refused_is_shown() -> None:
    console = ConsoleState()
    console.handle(LoginFailed("wrong user or password"))
    assert phase(console) is Phase.LOGIN_FAILED
    assert console.notice.text == "wrong user or password"


def test_image_keys_move_between_images_and_drive_the_view() -> None:
    console = with_item()
    picture = Image.new("RGB", (400, 200), (200, 10, 10))
    console.handle(ImageReady("req-00000001", 0, picture, thumbnail(picture)))
    console.handle(ImageReady("other-request", 1, picture, thumbnail(picture)))  # ignored
    assert console.view is not None
    assert console.image_caption().startswith("1/2  ID card front  zoom 100%")
    console.key("plus")
    assert console.view.state.zoom == pytest.approx(1.25)
    console.key("period")
    assert console.view.state.rotation == 90
    console.key("Right")
    assert console.current == 1
    assert console.view is None  # not loaded yet
    assert console.image_caption().endswith("loading...")
    console.key("Left")
    assert console.current == 0
    console.select_image(1)
    assert console.current == 1


# -- image view maths -------------------------------------------------------------


def test_fit_zoom_pan_rotate() -> None:
    image = Image.new("RGB", (1600, 1000), (255, 255, 255))
    view = ImageView(image, (800, 800))
    assert view.fit_scale() == pytest.approx(0.5)
    assert view.visible_box() == pytest.approx((0, -300, 1600, 1300))
    view.zoom_in()
    view.zoom_in()
    assert view.scale() == pytest.approx(0.5 * 1.25 * 1.25)
    view.pan(100, 0)  # screen pixels
    cx, _ = view.center()
    assert cx == pytest.approx(800 + 100 / view.scale())
    view.pan(1e9, 1e9)  # clamped: the image never leaves the view entirely
    assert view.center() == (1600, 1000)
    view.rotate()
    assert view.rotated_size() == (1000, 1600)
    assert view.state.zoom == 1.0  # a turn re-fits
    assert view.fit_scale() == pytest.approx(0.5)
    view.fit()
    for _ in range(40):
        view.zoom_out()
    assert view.state.zoom == pytest.approx(1 / 8)


def test_render_draws_the_visible_part_at_the_viewport_size() -> None:
    image = Image.new("RGB", (200, 100), (255, 0, 0))
    image.paste((0, 0, 255), (100, 0, 200, 100))  # right half blue
    view = ImageView(image, (400, 400))
    fitted = view.render()
    assert fitted.size == (400, 400)
    assert rgb(fitted, (50, 200)) == (255, 0, 0)
    assert rgb(fitted, (350, 200)) == (0, 0, 255)
    assert rgb(fitted, (200, 20)) == (40, 42, 48)  # letterbox above the image
    view.rotate()  # clockwise: the left (red) half is now on top
    turned = view.render()
    assert rgb(turned, (200, 50))[0] > 200
    assert rgb(turned, (200, 350))[2] > 200
    view.fit()
    view.zoom(4)
    view.pan(0, -10_000)  # to the top edge (the turned red half): all red
    assert set(colors(view.render())) <= {(255, 0, 0), (40, 42, 48)}


def test_decode_and_thumbnail_of_a_synthetic_capture() -> None:
    image = decode(synthetic.id_card_front(seed=3))
    assert image.mode == "RGB"
    assert image.size == (1600, 1010)
    small = thumbnail(image)
    assert small.size == (120, 90)


# -- supervisor view --------------------------------------------------------------


def snapshot() -> spb.QueueSnapshot:
    snap = spb.QueueSnapshot(
        overview=spb.QueueOverview(
            waiting=3, claimed=1, oldest_wait_ms=95_000, oldest_request_id="req-1", at_ms=5_000_000
        ),
        active_authorizers=2,
        away_authorizers=1,
        decisions_last_minute=14,
        wait_p50_ms=4_000,
        wait_p90_ms=30_000,
        wait_p99_ms=61_000,
        wait_window_s=300,
        wait_samples=40,
    )
    snap.overview.by_class.add(importance=1, urgency=cpb.URGENCY_NORMAL, waiting=1,
                               oldest_wait_ms=95_000)  # fmt: skip
    snap.overview.by_class.add(importance=3, urgency=cpb.URGENCY_URGENT, waiting=2,
                               oldest_wait_ms=5_000)  # fmt: skip
    snap.overview.by_branch.add(branch_id="branch-1", waiting=3)
    snap.waiting_list.add(request_id="req-2", position=0, branch_id="branch-1",
                          business_type="CASH_DEPOSIT", importance=3,
                          urgency=cpb.URGENCY_URGENT, wait_ms=5_000,
                          amount=cpb.Money(minor_units=500, currency="CNY"))  # fmt: skip
    snap.authorizers.add(authorizer_id="authorizer-1", holding=1)
    snap.authorizers.add(authorizer_id="authorizer-2", waiting=True, away=True)
    snap.pending_moves.add(request_id="req-2", requester="supervisor-2", reason="VIP")
    snap.emergencies.add(emergency_id="E1", reason="network", branch_ids=["branch-2"])
    for minute in range(30):
        snap.minutes.add(minute_start_ms=minute * 60_000, decisions=minute % 5,
                         wait_p50_ms=1000 * minute, wait_max_ms=2000 * minute)  # fmt: skip
    return snap


def test_supervisor_rows_from_a_snapshot() -> None:
    state = SupervisorState()
    state.handle(Connected("supervisor-1", ("SUPERVISOR",)))
    assert state.summary_lines() == ["waiting for the first snapshot..."]
    state.handle(SnapshotArrived(snapshot()))
    lines = state.summary_lines()
    assert lines[0] == "waiting 3   claimed 1   needs supplement 0"
    assert lines[1] == "oldest wait 1 min 35 s (req-1)"
    assert "active 2   away 1" in lines[2]
    assert "p99 1 min 01 s" in lines[4]
    assert state.class_rows() == [
        ("importance 3 urgent", "2", "5 s"),
        ("importance 1", "1", "1 min 35 s"),
    ]
    assert state.waiting_rows() == [
        ("1", "req-2 (move pending)", "现金存款", "5.00 CNY", "branch-1", "5 s", "3U")
    ]
    assert state.authorizer_rows() == [
        ("authorizer-1", "holding 1"),
        ("authorizer-2", "away, waiting for work"),
    ]
    assert state.move_rows() == [("req-2", "supervisor-2", "VIP")]
    assert state.emergency_rows() == [("E1", "branch-2", "network")]
    assert len(state.decisions_series()) == 30
    assert state.points[-1].oldest_wait_ms == 95_000


def test_supervisor_commands_are_checked_before_sending() -> None:
    state = SupervisorState()
    assert state.request_move("", "why") == []
    assert state.request_move("req-2", "  ") == []
    assert "R6" in state.notice
    assert state.request_move("req-2", " VIP ")[0].reason == "VIP"  # type: ignore[union-attr]
    assert state.declare_emergency("", "") == []
    declared = state.declare_emergency("branch network failure", "branch-1, branch-2")
    assert declared[0].branch_ids == ("branch-1", "branch-2")  # type: ignore[union-attr]
    assert state.set_enabled("authorizer-1", False, "") == []
    assert "R12" in state.notice
    assert state.set_enabled("authorizer-1", True, "")[0].enabled is True  # type: ignore[union-attr]
    state.handle(
        ActionRefused("move", "req-2", "PERMISSION_DENIED", "the requester confirming (R6)")
    )
    assert state.notice_level == "error"
    assert "the requester confirming (R6)" in state.notice


def test_charts_draw_their_data() -> None:
    bars = bar_chart([0, 5, 10], (300, 120), "decisions per minute")
    assert bars.size == (300, 120)
    blue = count_of(bars, (60, 120, 200))
    assert blue > 500
    empty = bar_chart([0, 0, 0], (300, 120), "decisions per minute")
    assert (60, 120, 200) not in set(colors(empty))
    lines = wait_chart([(1000, 2000), (3000, 9000), (2000, 4000)], (300, 120), "wait")
    assert (40, 150, 90) in set(colors(lines))


# -- the worker against a real server ---------------------------------------------


async def next_event(events: queue.Queue[Event], kind: type, within_s: float = 10) -> Event:
    deadline = time.monotonic() + within_s
    while time.monotonic() < deadline:
        try:
            event = events.get_nowait()
        except queue.Empty:
            await asyncio.sleep(0.02)
            continue
        if isinstance(event, kind):
            return event
    raise AssertionError(f"no {kind.__name__} within {within_s} s")


async def test_worker_takes_an_offer_loads_images_and_decides(server: RunningServer) -> None:
    await server.account("authorizer-1", [Role.AUTHORIZER])
    events: queue.Queue[Event] = queue.Queue()
    worker = Worker(server.target, "authorizer-1", PASSWORD, events.put)
    worker.start()
    try:
        await next_event(events, Connected)
        worker.send(Credit())
        async with server.teller() as teller:
            await teller.submit(request(request_id="console-0001"))
        arrived = await next_event(events, OfferArrived)
        assert isinstance(arrived, OfferArrived)
        assert arrived.offer.request.request_id == "console-0001"
        ready = await next_event(events, ImageReady)
        assert isinstance(ready, ImageReady)
        assert ready.image.size[0] > 1000
        token = arrived.offer.lease.fencing_token
        worker.send(Decide("console-0001", token, "reject"))  # no reason: the server says no
        refused = await next_event(events, ActionRefused)
        assert isinstance(refused, ActionRefused)
        assert refused.code == "INVALID_ARGUMENT"
        assert "reason" in refused.message
        worker.send(Decide("console-0001", token, "approve"))
        done = await next_event(events, ActionDone)
        assert isinstance(done, ActionDone)
        assert done.text == "APPROVED"
    finally:
        await asyncio.to_thread(worker.stop)


async def test_worker_stops_renewing_an_orphan_decided_elsewhere(server: RunningServer) -> None:
    """An item held over from an earlier stream (renewed by the unary call until the
    console decides it) that another console of the same authorizer decided meanwhile:
    the renewals stop and the console is told, rather than renewing until the end."""
    await server.account("authorizer-1", [Role.AUTHORIZER])
    events: queue.Queue[Event] = queue.Queue()
    worker = Worker(server.target, "authorizer-1", PASSWORD, events.put)
    async with server.teller() as teller, server.authorizer("authorizer-1") as other:
        await teller.submit(request(request_id="orphan-0001"))
        offer = await other.next(timeout=10)
        token = offer.lease.fencing_token
        await other.decide("orphan-0001", token, "approve")
        orphans = {"orphan-0001": token}
        worker._held["orphan-0001"] = token
        await asyncio.wait_for(worker._renew_orphans(other, orphans), 10)
    assert orphans == {}
    assert "orphan-0001" not in worker._held
    lost = await next_event(events, LeaseLost)
    assert isinstance(lost, LeaseLost)
    assert lost.request_id == "orphan-0001"


async def test_worker_reports_a_refused_login(server: RunningServer) -> None:
    events: queue.Queue[Event] = queue.Queue()
    worker = Worker(server.target, "nobody-at-all", "wrong-password-1", events.put)
    worker.start()
    try:
        failed = await next_event(events, LoginFailed)
        assert isinstance(failed, LoginFailed)
        assert failed.message
    finally:
        await asyncio.to_thread(worker.stop)


async def test_worker_names_the_command_that_sets_a_first_password(
    server: RunningServer,
) -> None:
    """An account an administrator created must choose its password first (R11): the
    console says which command does it, not the name of the RPC."""
    await server.runtime.accounts.create_user(
        "authorizer-9", "authorizer-9", [Role.AUTHORIZER], "set-by-admin-1"
    )
    events: queue.Queue[Event] = queue.Queue()
    worker = Worker(server.target, "authorizer-9", "set-by-admin-1", events.put)
    worker.start()
    try:
        failed = await next_event(events, LoginFailed)
        assert isinstance(failed, LoginFailed)
        assert "`authq-authorizer passwd`" in failed.message
        assert "ChangePassword" not in failed.message
    finally:
        await asyncio.to_thread(worker.stop)


async def test_worker_retries_while_the_server_is_away() -> None:
    events: queue.Queue[Event] = queue.Queue()
    worker = Worker("127.0.0.1:1", "authorizer-1", PASSWORD, events.put)
    worker.start()
    try:
        await next_event(events, Connecting)
        for _ in range(2):
            event = await next_event(events, Connecting)
            assert isinstance(event, Connecting)
            if event.retry_in_s > 0:
                break
        else:
            raise AssertionError("no retry announced")
        assert event.reason
    finally:
        await asyncio.to_thread(worker.stop)
