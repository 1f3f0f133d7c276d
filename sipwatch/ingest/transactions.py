"""REGISTER transaction and registration-attempt reassembly.

Transactions are matched on (side, top-Via branch) and fall back to (side, Call-ID, CSeq)
when a message has no branch (RFC 2543 peers, cut-off dumps).  Retransmitted requests and
responses fold into the transaction they belong to, so every transaction is counted once, by
its first final response.  Responses whose request is not in the log (capture started late)
still make a transaction, marked ``saw_request=False``.

Attempts join transactions on (side, Call-ID): REGISTER -> 401 -> REGISTER+auth -> final.

Time is *log time* (the newest timestamp seen), never the wall clock, so a replay of last
week's file times out transactions exactly as the live daemon would have.  Memory is bounded
by SIP Timer F (state older than ``timer_f`` log-seconds is expired) and by ``max_pending``
(the oldest state is evicted first when a flood of unanswered requests arrives).
"""

from __future__ import annotations

from collections import deque
from typing import Any

from sipwatch.ingest import speedups
from sipwatch.model import (
    AttemptOutcome,
    Direction,
    RegisterAttempt,
    RegisterTransaction,
    Side,
    SipMessage,
    TrackerStats,
    transaction_opened_by,
)
from sipwatch.sip_meaning import MAX_CHALLENGES, TIMER_F, is_challenge

Completed = RegisterTransaction | RegisterAttempt


class RegisterTracker:
    """Feeds on SipMessages, emits completed RegisterTransactions and RegisterAttempts.

    Call ``on_message`` for each message and read completions from the list it returns (the
    same list object every time: consume it before the next call).  ``advance(now)`` expires
    state by log time; ``flush()`` ends the input and times out everything still open.
    """

    def __init__(
        self,
        *,
        timer_f: float = TIMER_F,
        max_pending: int = 100_000,
        max_pending_attempts: int | None = None,
    ) -> None:
        self.timer_f = timer_f
        self.max_pending = max_pending
        self.max_pending_attempts = (
            max_pending_attempts if max_pending_attempts is not None else max_pending
        )
        self.stats = TrackerStats()
        self.now = 0.0
        self._by_branch: dict[tuple[Side, str], RegisterTransaction] = {}
        self._by_cseq: dict[tuple[Side, str, int], RegisterTransaction] = {}
        self._attempts: dict[tuple[Side, str], RegisterAttempt] = {}
        # (deadline, tx): transactions in start order; expired lazily
        self._tx_timeline: deque[tuple[float, RegisterTransaction]] = deque()
        # (deadline, attempt, transactions-at-schedule): attempts waiting for a re-REGISTER
        self._attempt_timeline: deque[tuple[float, RegisterAttempt, int]] = deque()
        self._pending = 0
        self._out: list[Completed] = []

    # ------------------------------------------------------------------ queries
    @property
    def inflight_transactions(self) -> int:
        return self._pending

    @property
    def inflight_attempts(self) -> int:
        return len(self._attempts)

    # ------------------------------------------------------------------ input
    def on_message(self, msg: SipMessage) -> list[Completed]:
        out = self._out
        out.clear()
        now = msg.ts
        if now > self.now:
            self.now = now
            # most messages expire nothing: peek at the deadlines before calling out
            tl = self._tx_timeline
            at = self._attempt_timeline
            if (tl and tl[0][0] <= now) or (at and at[0][0] <= now):
                self._expire(now)
        if msg.method != "REGISTER":
            return out
        if msg.is_request:
            self._request(msg)
        elif msg.status >= 200:
            self._response(msg)
        return out

    def advance(self, now: float) -> list[Completed]:
        """Expire state as of log time ``now`` (the daemon calls this on idle)."""
        out = self._out
        out.clear()
        if now > self.now:
            self.now = now
        self._expire(self.now)
        return out

    def flush(self) -> list[Completed]:
        """End of input: everything still open times out (or is abandoned)."""
        out = self._out
        out.clear()
        self._expire(float("inf"))
        return out

    # ------------------------------------------------------------------ internals
    def _request(self, msg: SipMessage) -> None:
        side = Side.INBOUND if msg.direction is Direction.RECV else Side.OUTBOUND
        tx = self._lookup(side, msg)
        if tx is not None:
            tx.requests += 1
            self.stats.retransmitted_requests += 1
            return
        tx = transaction_opened_by(side, msg, True)
        self._index(side, tx)
        self._pending += 1
        self._tx_timeline.append((msg.ts + self.timer_f, tx))
        if self._pending > self.max_pending:
            self._evict()
        self._attach(side, tx, msg)

    def _response(self, msg: SipMessage) -> None:
        side = Side.INBOUND if msg.direction is Direction.SEND else Side.OUTBOUND
        tx = self._lookup(side, msg)
        if tx is None:
            # The request is not in the log: still one transaction, counted by this answer.
            self.stats.orphan_responses += 1
            tx = transaction_opened_by(side, msg, False)
            self._index(side, tx)
            self._tx_timeline.append((msg.ts + self.timer_f, tx))
            self._pending += 1
            self._finish(tx, msg)
            return
        if tx.status:
            tx.responses += 1
            self.stats.retransmitted_responses += 1
            return
        self._finish(tx, msg)

    def _finish(self, tx: RegisterTransaction, msg: SipMessage) -> None:
        tx.status = msg.status
        tx.reason = msg.reason
        tx.x_reason = msg.x_reason
        tx.www_authenticate = msg.www_authenticate
        tx.finished = msg.ts
        tx.responses = 1
        if not tx.to_user and msg.to_user:
            tx.to_user, tx.to_host = msg.to_user, msg.to_host
        self._pending -= 1
        self.stats.transactions += 1
        self._out.append(tx)
        self._settle_attempt(tx)

    def _lookup(self, side: Side, msg: SipMessage) -> RegisterTransaction | None:
        if msg.via_branch:
            tx = self._by_branch.get((side, msg.via_branch))
            # a branch is only trusted with its Call-ID: broken UAs reuse branch values
            if tx is not None and tx.call_id == msg.call_id:
                return tx
        return self._by_cseq.get((side, msg.call_id, msg.cseq))

    def _index(self, side: Side, tx: RegisterTransaction) -> None:
        if tx.branch:
            self._by_branch[(side, tx.branch)] = tx
        self._by_cseq[(side, tx.call_id, tx.cseq)] = tx

    def _unindex(self, tx: RegisterTransaction) -> None:
        if tx.branch:
            key = (tx.side, tx.branch)
            if self._by_branch.get(key) is tx:
                del self._by_branch[key]
        ckey = (tx.side, tx.call_id, tx.cseq)
        if self._by_cseq.get(ckey) is tx:
            del self._by_cseq[ckey]

    # ------------------------------------------------------------------ attempts
    def _attach(self, side: Side, tx: RegisterTransaction, msg: SipMessage) -> None:
        key = (side, msg.call_id)
        att = self._attempts.get(key)
        if att is None:
            att = self._new_attempt(tx)
            self._add_attempt(key, att)
        att.transactions += 1
        att.last_cseq = msg.cseq
        if msg.auth_username:
            att.auth_username = msg.auth_username
        if msg.expires is not None:
            att.expires = msg.expires

    @staticmethod
    def _new_attempt(tx: RegisterTransaction) -> RegisterAttempt:
        """An attempt begins with its first transaction (normally the unauthenticated one)."""
        # positional, in the field order of RegisterAttempt (as transaction_opened_by)
        return RegisterAttempt(
            tx.side,
            tx.call_id,
            tx.started,
            tx.source,
            tx.peer_ip,
            tx.peer_port,
            tx.transport,
            tx.to_user,
            tx.to_host,
            tx.from_user,
            tx.request_uri,
            tx.user_agent,
            "",  # auth_username: set by _attach
            0,  # transactions
            False,  # challenged
            0,  # challenges
            0,  # auth_rejections
            0,  # last_cseq
            AttemptOutcome.TIMEOUT,  # outcome
            0,  # status
            "",  # reason
            "",  # x_reason
            0.0,  # finished
            tx.expires,
        )

    def _add_attempt(self, key: tuple[Side, str], att: RegisterAttempt) -> None:
        """Open an attempt, first making room: at most ``max_pending_attempts`` stay open, so
        a flood of new Call-IDs (or of challenges whose request is not in the log) stays
        bounded."""
        if len(self._attempts) >= self.max_pending_attempts:
            self._trim_attempts()
        self._attempts[key] = att

    def _settle_attempt(self, tx: RegisterTransaction) -> None:
        key = (tx.side, tx.call_id)
        att = self._attempts.get(key)
        if att is None:
            if tx.saw_request:
                return
            # orphan final answer: an attempt of one transaction, for the outcome counters
            att = self._new_attempt(tx)
            att.transactions = 1
            self._add_attempt(key, att)
        status = tx.status
        att.status = status
        att.reason = tx.reason
        att.x_reason = tx.x_reason
        att.finished = tx.finished
        if is_challenge(status):
            att.challenged = True
            att.challenges += 1
            if tx.has_auth:
                att.auth_rejections += 1
            if att.auth_rejections >= MAX_CHALLENGES:
                self._close(att, AttemptOutcome.CHALLENGE_LOOP)
                return
            # wait for the device to come back with credentials
            self._attempt_timeline.append((tx.finished + self.timer_f, att, att.transactions))
            return
        self._close(att, AttemptOutcome.SUCCESS if status < 300 else AttemptOutcome.FAILURE)

    def _close(self, att: RegisterAttempt, outcome: AttemptOutcome) -> None:
        att.outcome = outcome
        key = (att.side, att.call_id)
        if self._attempts.get(key) is att:
            del self._attempts[key]
        self._out.append(att)

    # ------------------------------------------------------------------ expiry
    def _expire(self, now: float) -> None:
        timeline = self._tx_timeline
        while timeline and timeline[0][0] <= now:
            _, tx = timeline.popleft()
            self._expire_tx(tx)
        waiting = self._attempt_timeline
        while waiting and waiting[0][0] <= now:
            _, att, seen = waiting.popleft()
            key = (att.side, att.call_id)
            # still open and no new transaction since the challenge: the device gave up
            if self._attempts.get(key) is att and att.transactions == seen:
                self._close(
                    att,
                    AttemptOutcome.CHALLENGE_LOOP
                    if att.auth_rejections
                    else AttemptOutcome.ABANDONED,
                )

    def _expire_tx(self, tx: RegisterTransaction) -> None:
        self._unindex(tx)
        if tx.status:
            return
        tx.timed_out = True
        tx.finished = tx.started + self.timer_f
        self._pending -= 1
        self.stats.transactions += 1
        self._out.append(tx)
        att = self._attempts.get((tx.side, tx.call_id))
        if att is not None and att.last_cseq == tx.cseq:
            # the attempt's newest transaction got no answer
            att.finished = tx.finished
            att.status = 0
            self._close(att, AttemptOutcome.TIMEOUT)

    def _evict(self) -> None:
        """Too much open state (a flood of unanswered REGISTERs): time out the oldest."""
        timeline = self._tx_timeline
        while timeline and self._pending > self.max_pending:
            _, tx = timeline.popleft()
            if not tx.status:
                self.stats.evicted += 1
            self._expire_tx(tx)

    def _trim_attempts(self) -> None:
        """Close the oldest open attempts in one batch (amortised O(1) per attempt), down to
        90% of ``max_pending_attempts``; called when that many are open, so at least one."""
        excess = len(self._attempts) - (self.max_pending_attempts * 9) // 10
        for key in list(self._attempts)[:excess]:
            att = self._attempts[key]
            self._close(att, AttemptOutcome.ABANDONED if att.challenged else AttemptOutcome.TIMEOUT)
        self.stats.evicted_attempts += excess


# The tracker in two implementations (``sipwatch.ingest.speedups``): this module's, the
# reference, and ``_transactions.RegisterTracker``, the same algorithm with its open state in
# C fields, built with the parser's extension.
IMPLEMENTATIONS: dict[str, Any] = {speedups.PYTHON: RegisterTracker}
if speedups.compiled_tracker is not None:
    IMPLEMENTATIONS[speedups.COMPILED] = speedups.compiled_tracker.RegisterTracker


# What ``new_tracker`` builds unless told otherwise (a module global, as ``framing.HOT_PATH``,
# so a test can patch it).
TRACKER = IMPLEMENTATIONS[speedups.IMPLEMENTATION]


def new_tracker(implementation: str | None = None, **settings: Any) -> RegisterTracker:
    """A tracker of the implementation this process runs (or of ``implementation``); both
    take ``RegisterTracker``'s keyword settings and answer to its interface."""
    cls = TRACKER if implementation is None else IMPLEMENTATIONS[implementation]
    tracker: RegisterTracker = cls(**settings)
    return tracker
