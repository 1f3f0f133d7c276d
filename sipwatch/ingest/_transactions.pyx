# cython: language_level=3, boundscheck=True, wraparound=False, initializedcheck=True
# cython: cdivision=False, embedsignature=False
"""The compiled REGISTER tracker: a drop-in for ``sipwatch.ingest.transactions.RegisterTracker``.

The ``.py`` tracker is the definition (the whole suite runs against both, and the
differential properties require byte-identical replay JSON from the two); this is the same
algorithm, line for line, with its state kept where compiled code reads it at C speed.

Why it is written again rather than compiled from the ``.py`` source: mypyc and Cython
compiling the reference as it is measured no faster (docs/architecture.md), because the time
went to reading and writing attributes of Python objects, which compiled code does no faster
than CPython 3.11's specialising interpreter.  Here an open transaction or attempt is an
extension object with C fields (``_Tx``, ``_Att``) that only this module reads, so matching a
message, folding a retransmission and expiring by log time never touch a Python attribute:

* a transaction's ``RegisterTransaction`` is built when it opens, as the reference builds it,
  and written only when it completes (status, reason, times), or when a retransmission folds
  into it after it was emitted (the reference's observers see the same object change);
* an attempt is not visible to anyone until it closes, so its ``RegisterAttempt`` is built
  once, then, from the C fields: no object at all while it waits for credentials;
* the counters are C integers; ``stats`` builds the reference's ``TrackerStats`` when read.
"""

from collections import deque

from sipwatch.model import (
    AttemptOutcome,
    Direction,
    RegisterAttempt,
    Side,
    TrackerStats,
    transaction_opened_by,
)
from sipwatch.sip_meaning import CHALLENGE_STATUSES, TIMER_F
from sipwatch.sip_meaning import MAX_CHALLENGES as _MAX_CHALLENGES

cdef object _INBOUND = Side.INBOUND
cdef object _OUTBOUND = Side.OUTBOUND
cdef object _RECV = Direction.RECV
cdef object _SEND = Direction.SEND
cdef object _SUCCESS = AttemptOutcome.SUCCESS
cdef object _FAILURE = AttemptOutcome.FAILURE
cdef object _TIMEOUT = AttemptOutcome.TIMEOUT
cdef object _ABANDONED = AttemptOutcome.ABANDONED
cdef object _CHALLENGE_LOOP = AttemptOutcome.CHALLENGE_LOOP
cdef object _opened_by = transaction_opened_by
cdef object _Attempt = RegisterAttempt
cdef str _REGISTER = "REGISTER"
cdef long MAX_CHALLENGES = _MAX_CHALLENGES
cdef frozenset _CHALLENGES = CHALLENGE_STATUSES
cdef double _INF = float("inf")


cdef class _Tx:
    """An open (or answered, until Timer F) transaction: what the tracker reads, in C."""

    cdef object obj  # its RegisterTransaction
    cdef object side
    cdef object call_id
    cdef object cseq
    cdef object branch
    cdef object bkey  # (side, branch) or None
    cdef object ckey  # (side, call_id, cseq)
    cdef double started
    cdef double deadline
    cdef long status
    cdef bint has_auth
    cdef bint saw_request
    cdef bint to_user_empty


cdef class _Att:
    """An open attempt; its RegisterAttempt is built when it closes (``_build``)."""

    cdef object key  # (side, call_id)
    cdef object side
    cdef object call_id
    cdef double started
    cdef object source
    cdef object peer_ip
    cdef object peer_port
    cdef object transport
    cdef object to_user
    cdef object to_host
    cdef object from_user
    cdef object request_uri
    cdef object user_agent
    cdef object auth_username
    cdef long transactions
    cdef bint challenged
    cdef long challenges
    cdef long auth_rejections
    cdef object last_cseq
    cdef object outcome
    cdef long status
    cdef object reason
    cdef object x_reason
    cdef double finished
    cdef object expires

    cdef object _build(self):
        # positional, in the field order of RegisterAttempt
        return _Attempt(
            self.side,
            self.call_id,
            self.started,
            self.source,
            self.peer_ip,
            self.peer_port,
            self.transport,
            self.to_user,
            self.to_host,
            self.from_user,
            self.request_uri,
            self.user_agent,
            self.auth_username,
            self.transactions,
            self.challenged,
            self.challenges,
            self.auth_rejections,
            self.last_cseq,
            self.outcome,
            self.status,
            self.reason,
            self.x_reason,
            self.finished,
            self.expires,
        )


cdef class RegisterTracker:
    """``sipwatch.ingest.transactions.RegisterTracker``, compiled; the same interface."""

    cdef readonly double timer_f
    cdef readonly Py_ssize_t max_pending
    cdef readonly Py_ssize_t max_pending_attempts
    cdef readonly double now
    cdef dict _by_branch
    cdef dict _by_cseq
    cdef dict _attempts
    cdef object _tx_timeline  # deque of _Tx in start order
    cdef object _attempt_timeline  # deque of (deadline, _Att, transactions-at-schedule)
    cdef Py_ssize_t _pending
    cdef list _out
    cdef Py_ssize_t _transactions
    cdef Py_ssize_t _retransmitted_requests
    cdef Py_ssize_t _retransmitted_responses
    cdef Py_ssize_t _orphan_responses
    cdef Py_ssize_t _evicted
    cdef Py_ssize_t _evicted_attempts

    def __init__(
        self,
        *,
        timer_f=TIMER_F,
        max_pending=100_000,
        max_pending_attempts=None,
    ):
        self.timer_f = timer_f
        self.max_pending = max_pending
        self.max_pending_attempts = (
            max_pending_attempts if max_pending_attempts is not None else max_pending
        )
        self.now = 0.0
        self._by_branch = {}
        self._by_cseq = {}
        self._attempts = {}
        self._tx_timeline = deque()
        self._attempt_timeline = deque()
        self._pending = 0
        self._out = []

    # ------------------------------------------------------------------ queries
    @property
    def stats(self):
        return TrackerStats(
            self._transactions,
            self._retransmitted_requests,
            self._retransmitted_responses,
            self._orphan_responses,
            self._evicted,
            self._evicted_attempts,
        )

    @property
    def inflight_transactions(self):
        return self._pending

    @property
    def inflight_attempts(self):
        return len(self._attempts)

    # ------------------------------------------------------------------ input
    def on_message(self, msg):
        cdef list out = self._out
        cdef double now = msg.ts
        del out[:]
        if now > self.now:
            self.now = now
            if self._due(now):
                self._expire(now)
        if msg.method != _REGISTER:
            return out
        if msg.is_request:
            self._request(msg, now)
        elif msg.status >= 200:
            self._response(msg, now)
        return out

    def advance(self, now):
        """Expire state as of log time ``now`` (the daemon calls this on idle)."""
        cdef list out = self._out
        del out[:]
        if now > self.now:
            self.now = now
        self._expire(self.now)
        return out

    def flush(self):
        """End of input: everything still open times out (or is abandoned)."""
        cdef list out = self._out
        del out[:]
        self._expire(_INF)
        return out

    # ------------------------------------------------------------------ internals
    cdef bint _due(self, double now):
        cdef _Tx tx
        if self._tx_timeline:
            tx = self._tx_timeline[0]
            if tx.deadline <= now:
                return True
        if self._attempt_timeline:
            if <double>self._attempt_timeline[0][0] <= now:
                return True
        return False

    cdef void _request(self, object msg, double ts) except *:
        side = _INBOUND if msg.direction is _RECV else _OUTBOUND
        cdef _Tx tx = self._lookup(side, msg)
        if tx is not None:
            tx.obj.requests += 1
            self._retransmitted_requests += 1
            return
        tx = self._open(side, msg, ts, True)
        self._index(tx)
        self._pending += 1
        self._tx_timeline.append(tx)
        if self._pending > self.max_pending:
            self._evict()
        self._attach(side, tx, msg)

    cdef void _response(self, object msg, double ts) except *:
        side = _INBOUND if msg.direction is _SEND else _OUTBOUND
        cdef _Tx tx = self._lookup(side, msg)
        if tx is None:
            # The request is not in the log: still one transaction, counted by this answer.
            self._orphan_responses += 1
            tx = self._open(side, msg, ts, False)
            self._index(tx)
            self._tx_timeline.append(tx)
            self._pending += 1
            self._finish(tx, msg, ts)
            return
        if tx.status:
            tx.obj.responses += 1
            self._retransmitted_responses += 1
            return
        self._finish(tx, msg, ts)

    cdef _Tx _open(self, object side, object msg, double ts, bint saw_request):
        """The reference's transaction (``model.transaction_opened_by``), with the fields the
        tracker reads copied into C."""
        cdef _Tx tx = _Tx.__new__(_Tx)
        cdef object obj = _opened_by(side, msg, saw_request)
        tx.obj = obj
        tx.side = side
        tx.call_id = obj.call_id
        tx.cseq = obj.cseq
        tx.branch = obj.branch
        tx.started = ts
        tx.deadline = ts + self.timer_f
        tx.status = 0
        tx.has_auth = obj.has_auth
        tx.saw_request = saw_request
        tx.to_user_empty = not obj.to_user
        return tx

    cdef void _finish(self, _Tx tx, object msg, double ts) except *:
        cdef object obj = tx.obj
        status = msg.status
        tx.status = status
        obj.status = status
        obj.reason = msg.reason
        obj.x_reason = msg.x_reason
        obj.www_authenticate = msg.www_authenticate
        obj.finished = ts
        obj.responses = 1
        if tx.to_user_empty:
            to_user = msg.to_user
            if to_user:
                obj.to_user = to_user
                obj.to_host = msg.to_host
                tx.to_user_empty = False
        self._pending -= 1
        self._transactions += 1
        self._out.append(obj)
        self._settle_attempt(tx, msg, ts)

    cdef _Tx _lookup(self, object side, object msg):
        cdef _Tx tx
        call_id = msg.call_id
        branch = msg.via_branch
        if branch:
            found = self._by_branch.get((side, branch))
            # a branch is only trusted with its Call-ID: broken UAs reuse branch values
            if found is not None:
                tx = <_Tx>found
                if tx.call_id == call_id:
                    return tx
        found = self._by_cseq.get((side, call_id, msg.cseq))
        return <_Tx>found if found is not None else None

    cdef void _index(self, _Tx tx) except *:
        if tx.branch:
            tx.bkey = (tx.side, tx.branch)
            self._by_branch[tx.bkey] = tx
        tx.ckey = (tx.side, tx.call_id, tx.cseq)
        self._by_cseq[tx.ckey] = tx

    cdef void _unindex(self, _Tx tx) except *:
        if tx.bkey is not None:
            if self._by_branch.get(tx.bkey) is tx:
                del self._by_branch[tx.bkey]
        if self._by_cseq.get(tx.ckey) is tx:
            del self._by_cseq[tx.ckey]

    # ------------------------------------------------------------------ attempts
    cdef void _attach(self, object side, _Tx tx, object msg) except *:
        key = (side, tx.call_id)
        found = self._attempts.get(key)
        cdef _Att att
        if found is None:
            att = self._new_attempt(tx, key)
            self._add_attempt(att)
        else:
            att = <_Att>found
        att.transactions += 1
        att.last_cseq = tx.cseq
        auth_username = msg.auth_username
        if auth_username:
            att.auth_username = auth_username
        expires = msg.expires
        if expires is not None:
            att.expires = expires

    cdef _Att _new_attempt(self, _Tx tx, object key):
        """An attempt begins with its first transaction (normally the unauthenticated one)."""
        cdef _Att att = _Att.__new__(_Att)
        cdef object obj = tx.obj
        att.key = key
        att.side = tx.side
        att.call_id = tx.call_id
        att.started = tx.started
        att.source = obj.source
        att.peer_ip = obj.peer_ip
        att.peer_port = obj.peer_port
        att.transport = obj.transport
        att.to_user = obj.to_user
        att.to_host = obj.to_host
        att.from_user = obj.from_user
        att.request_uri = obj.request_uri
        att.user_agent = obj.user_agent
        att.auth_username = ""
        att.transactions = 0
        att.challenged = False
        att.challenges = 0
        att.auth_rejections = 0
        att.last_cseq = 0
        att.outcome = _TIMEOUT
        att.status = 0
        att.reason = ""
        att.x_reason = ""
        att.finished = 0.0
        att.expires = obj.expires
        return att

    cdef void _add_attempt(self, _Att att) except *:
        """Open an attempt, first making room: at most ``max_pending_attempts`` stay open."""
        if len(self._attempts) >= self.max_pending_attempts:
            self._trim_attempts()
        self._attempts[att.key] = att

    cdef void _settle_attempt(self, _Tx tx, object msg, double finished) except *:
        key = (tx.side, tx.call_id)
        found = self._attempts.get(key)
        cdef _Att att
        if found is None:
            if tx.saw_request:
                return
            # orphan final answer: an attempt of one transaction, for the outcome counters
            att = self._new_attempt(tx, key)
            att.transactions = 1
            self._add_attempt(att)
        else:
            att = <_Att>found
        status = msg.status
        att.status = tx.status
        att.reason = msg.reason
        att.x_reason = msg.x_reason
        att.finished = finished
        if status in _CHALLENGES:
            att.challenged = True
            att.challenges += 1
            if tx.has_auth:
                att.auth_rejections += 1
            if att.auth_rejections >= MAX_CHALLENGES:
                self._close(att, _CHALLENGE_LOOP)
                return
            # wait for the device to come back with credentials
            self._attempt_timeline.append((finished + self.timer_f, att, att.transactions))
            return
        self._close(att, _SUCCESS if tx.status < 300 else _FAILURE)

    cdef void _close(self, _Att att, object outcome) except *:
        att.outcome = outcome
        if self._attempts.get(att.key) is att:
            del self._attempts[att.key]
        self._out.append(att._build())

    # ------------------------------------------------------------------ expiry
    cdef void _expire(self, double now) except *:
        cdef _Tx tx
        cdef _Att att
        timeline = self._tx_timeline
        while timeline:
            tx = <_Tx>timeline[0]
            if tx.deadline > now:
                break
            timeline.popleft()
            self._expire_tx(tx)
        waiting = self._attempt_timeline
        while waiting:
            entry = waiting[0]
            if <double>entry[0] > now:
                break
            waiting.popleft()
            att = <_Att>entry[1]
            # still open and no new transaction since the challenge: the device gave up
            if self._attempts.get(att.key) is att and att.transactions == <long>entry[2]:
                self._close(att, _CHALLENGE_LOOP if att.auth_rejections else _ABANDONED)

    cdef void _expire_tx(self, _Tx tx) except *:
        self._unindex(tx)
        if tx.status:
            return
        cdef object obj = tx.obj
        cdef double finished = tx.started + self.timer_f
        obj.timed_out = True
        obj.finished = finished
        self._pending -= 1
        self._transactions += 1
        self._out.append(obj)
        found = self._attempts.get((tx.side, tx.call_id))
        cdef _Att att
        if found is not None:
            att = <_Att>found
            if att.last_cseq == tx.cseq:
                # the attempt's newest transaction got no answer
                att.finished = finished
                att.status = 0
                self._close(att, _TIMEOUT)

    cdef void _evict(self) except *:
        """Too much open state (a flood of unanswered REGISTERs): time out the oldest."""
        cdef _Tx tx
        timeline = self._tx_timeline
        while timeline and self._pending > self.max_pending:
            tx = <_Tx>timeline.popleft()
            if not tx.status:
                self._evicted += 1
            self._expire_tx(tx)

    cdef void _trim_attempts(self) except *:
        """Close the oldest open attempts in one batch, down to 90% of
        ``max_pending_attempts``; called when that many are open, so at least one."""
        cdef Py_ssize_t excess = len(self._attempts) - (self.max_pending_attempts * 9) // 10
        cdef _Att att
        for key in list(self._attempts)[:excess]:
            att = <_Att>self._attempts[key]
            self._close(att, _ABANDONED if att.challenged else _TIMEOUT)
        self._evicted_attempts += excess
