/*
 * fanout.pml -- Promela model of one lane of a shmbus fan-out bus:
 * subscriptions that each read every record in place with their own
 * cursor, the lagging clean position (producers zero released space and
 * move head under the lane's clean lock, with the minimum over the
 * blocking subscriptions' cursors), registration under the clean lock,
 * lossy subscribers that are overrun and read with the releasing seqlock,
 * and peers that die: a blocking subscriber (ephemeral: removed; durable:
 * taken over), a cleaner holding the clean lock.
 *
 * The protocol is the one of issue 14 (docs/protocol.md, "Subscriptions");
 * docs/model/README.md maps each step to it.  Run it with
 * docs/model/check.sh, or by hand:
 *
 *	spin -a fanout.pml && gcc -O2 -DSAFETY -o pan pan.c && ./pan -m2000000
 *
 * What is in it.  One lane of CAP units; a record is one unit (a length
 * word, the commit flag, and a payload word naming the message), so a
 * record is a message and positions count messages: the message count at
 * position p is p (lanes start at 0).  NP producers send NM messages each.
 * Two subscription slots S0 and S1 (kinds set by the switches below); a
 * late one registers while the producers run.  Lane words: head, tail,
 * releasing, cleaner (0 or peer+1), cleanSeq, cleanedMsgs, releasingMsgs.
 *
 * Abstractions, and why they are sound:
 *  - every shared access is one step and steps interleave sequentially
 *    consistently (Go's sync/atomic is SC; see protocol.md for what C
 *    peers need).  A few steps are merged where nobody can observe the
 *    difference: a subscriber's cursor store and its ring of the space
 *    doorbell (doorbell.pml shows store-then-ring loses no wake-up), the
 *    producer's tail CAS and its ghost bookkeeping, the zeroing of one
 *    unit (both words; the lossy reader still sees a unit zeroed between
 *    its length and payload loads, which is the torn read it must catch);
 *  - the doorbells are eventcounts: a waiter announces (woken := 0), then
 *    checks, then sleeps until a ring (woken := 1).  The data doorbell is
 *    "wait until a record is readable", since every change that makes one
 *    readable ends with a producer's commit and ring.  No backstop
 *    timeout: a wake-up that only a timer would give is a deadlock here
 *    (as in doorbell.pml), so the runs show the protocol does not lean on
 *    the timers;
 *  - the producer's 50 ms poll for dead peers is "the wait also ends when
 *    a peer it would act on has died": an ephemeral blocking subscription
 *    whose holder is dead, or a clean lock held by a dead peer;
 *  - proof of death is the dead[] flag, set in the same step as the death
 *    and never earlier; a dead process never writes again;
 *  - producers do not die here, and a claim is published by the producer
 *    that made it: ring.pml checks claims, dead claimants and recovery,
 *    which fan-out does not change (a subscriber stuck at a dead claim
 *    pads it with ring.Recover under the clean lock);
 *  - one lane, no fragments, no wrap padding (one-unit records never
 *    wrap), no 2^64 wrap: positions are small and only grow; cursors and
 *    head are checked with differences as in Go, the check is asserted.
 *
 * Properties (safety run, ./pan):
 *  - a subscriber delivers only the record a producer published at its
 *    position (the payload equals the ghost mat[pos]): never an
 *    unpublished, zeroed, overwritten or older-lap record;
 *  - a blocking subscriber delivers every position from its start in
 *    order, exactly once (at most one redelivery after a takeover of its
 *    durable subscription), and reaches the end (it terminates);
 *  - a lossy subscriber delivers intact records only, and every ErrLagged
 *    reports exactly the messages it skipped (releasingMsgs minus its
 *    message count, compared with the positions it jumped);
 *  - producers never overwrite a unit a blocking subscriber has not
 *    released, and only write units that are zero (invariant Z);
 *  - cursors the cleaner reads are within [head, tail] (no ErrCorrupt);
 *  - no deadlock: every process ends (the live subscribers read to the
 *    end, the producers send everything), unless DURABLE_STUCK, where a
 *    dead durable blocking subscription holds the producers back for good:
 *    then a producer may wait for ever, but only behind it (Monitor).
 *
 * Configuration:
 *  NP, NM, CAP    producers, messages each, lane units (default 1, 4, 2);
 *                 NM1: messages of producer 1 (default NM)
 *  S0LOSSY        S0 is lossy (default: blocking)
 *  S1LOSSY        S1 is lossy (default: blocking)
 *  S1LATE         S1 registers while the producers run (default: at start)
 *  FROM_OLDEST    a late S1 starts at head (default: from latest)
 *  S1EPH_DIES     S1 is ephemeral and blocking and may die at any step;
 *                 a producer removes it
 *  S1DUR_DIES     S1 is durable; its holder may die at any step and a new
 *                 holder takes it over, resuming at its cursor
 *  S1LOCK_DIES    S1 may die while it holds the clean lock (registration
 *                 or its step 5); ephemeral, removed afterwards
 *  P1LOCK_DIES    producer 1 may die while it holds the clean lock (NP=2)
 *  DURABLE_STUCK  S1 is durable, blocking, and dies for good
 * Deliberately broken (each must fail):
 *  NO_RELOAD      the lock holder unlocks without reloading the minimum
 *                 (step 5): a producer that failed the lock sleeps for ever
 *  REG_PLAIN_UNLOCK registration unlocks without step 5 (the protocol as
 *                 written only puts step 5 in Clean): a producer that
 *                 failed the lock while a subscriber registered sleeps
 *                 for ever
 *  REG_NO_LOCK    registration without the clean lock: a cleaner misses
 *                 the new blocking subscriber
 *  NO_POSTCHECK   the lossy reader does not re-load releasing after its
 *                 copy: torn or overwritten records delivered
 *  NO_LAP_CHECK   a subscriber reads at its cursor without checking it is
 *                 less than a lap ahead of head (the protocol as written:
 *                 "blocking subscribers read without checks")
 *  LATEST_AT_TAIL a late lossy subscriber starts at tail with the message
 *                 count of the published records only (the protocol as
 *                 written): its ErrLagged count is wrong
 *  LOSSY_WAITS    a lossy reader that finds cleanSeq odd only waits for it
 *                 to become even (the protocol as written): if the cleaner
 *                 died in the seqlock and no producer needs room, for ever
 *  RECLAIM_SPACE_ONLY  with no blocking subscription, a producer that could
 *                 not reclaim (the oldest record unpublished) sleeps on the
 *                 space doorbell only (the protocol as written): nobody
 *                 rings it when that record is published
 *  NO_SEQ_REPAIR  taking over a dead cleaner's lock does not close a
 *                 seqlock it left open (the protocol as written): lossy
 *                 readers wait for ever
 */

#ifndef NP
#define NP 1
#endif
#ifndef NM
#define NM 4
#endif
#ifndef CAP
#define CAP 2
#endif
#ifndef NM1
#define NM1 NM                 /* messages of producer 1 */
#endif
#if NP == 2
#define NMT (NM + NM1)         /* positions 0 .. NMT-1: one message each */
#else
#define NMT NM
#endif
#define NMP(p) ((p) == 0 -> NM : NM1)
#define NSUB 2
#define NPEER (NP + NSUB)      /* peer slots: producers, then subscribers */
#define SPEER(s) (NP + (s))

#ifdef S0LOSSY
#define LOSSY0 1
#else
#define LOSSY0 0
#endif
#ifdef S1LOSSY
#define LOSSY1 1
#else
#define LOSSY1 0
#endif
#if defined(S1EPH_DIES) || defined(S1LOCK_DIES)
#define EPH1 1
#else
#define EPH1 0
#endif

/* The lane. */
byte head, tail, releasing;
byte cleaner;                  /* clean lock: 0 free, else peer + 1 */
byte cseq;                     /* cleanSeq: odd while releasing/relMsgs change */
byte cleanedMsgs;              /* messages below head */
byte relMsgs;                  /* releasingMsgs: messages below releasing */
byte lenw[CAP];                /* length word (commit flag) */
byte val[CAP];                 /* payload: the message id */

/* The subscription table. */
byte sstate[NSUB];             /* 0 free, 1 active, 2 being removed */
bool lossy[NSUB];
bool eph[NSUB];
byte cur[NSUB];                /* cursor (release position) */

bool dead[NPEER];              /* provably dead */
bool woken[NP];                /* space doorbell: rung since the producer announced */

/* Ghost state. */
byte mat[NMT];                 /* message id claimed at each position */
bool pwait[NP];                /* producer waiting for room */
bool pdone[NP];

#define MSG(p, k) ((p) * 8 + (k) + 1)
/* Every producer finished or died: a subscriber at tail is at the end. */
#define PFIN(p) (pdone[p] || dead[p])
#define ALLFIN (PFIN(0) && PFIN(NP - 1))
#define LAPOK(c, h) ((c) >= (h) && (c) - (h) < CAP)   /* Go: c - h < C, unsigned */
#define BLOCKING(s) (sstate[s] == 1 && !lossy[s])
#define RINGSPACE woken[0] = 1; woken[NP - 1] = 1
/* The producer's poll finds something to do for a dead peer. */
#define DEADSUB(s) (BLOCKING(s) && eph[s] && dead[SPEER(s)])
#define DEADWORK (DEADSUB(0) || DEADSUB(1) || (cleaner != 0 && dead[cleaner - 1]))
/* No blocking subscription and the oldest record is published: the
 * producer can reclaim it.  Nobody rings the space doorbell for that
 * (commits ring the data doorbell): the producer's poll must look. */
#ifdef RECLAIM_SPACE_ONLY
#define RECLAIMABLE 0
#else
#define RECLAIMABLE (!BLOCKING(0) && !BLOCKING(1) && head < tail && lenw[head % CAP] != 0)
#endif

/* A process may die here (candie), or, for a durable subscription, its
 * holder may die and be taken over by a new one (restartok). */
#define MAYDIE \
	if \
	:: candie -> dead[me] = 1; goto died \
	:: restartok && !retaken -> goto restart \
	:: true \
	fi

#ifdef LATEST_AT_TAIL
#define LATEST \
	u = head; do :: u < tail && lenw[u % CAP] != 0 -> u++ :: else -> break od; \
	atomic { mc = cleanedMsgs + (u - head); c = tail; u = 0 }
#else
/* From latest: the end of the published prefix from head, and its count. */
#define LATEST \
	u = head; do :: u < tail && lenw[u % CAP] != 0 -> u++ :: else -> break od; \
	atomic { mc = cleanedMsgs + (u - head); c = u; u = 0 }
#endif
#ifdef FROM_OLDEST
#define START atomic { c = head; mc = cleanedMsgs }
#else
#define START LATEST
#endif
#define REGISTER(s) START; MAYDIE; d_step { cur[s] = c; got = c; sstate[s] = 1 }

/*
 * Clean(lane) and every other use of the clean lock.  Used once per
 * proctype; `what` says what to do while holding the lock: 0 = clean,
 * 1 = register subscription `reg`.  `need`: the position head must reach
 * for the caller (producers: their claim end - CAP; others: 0), which
 * bounds reclaiming when no blocking subscription exists.
 * Locals used: ok, cw, x, u, tg, nb.  MAYDIE: the caller may die here,
 * holding the lock.
 */
inline lockclean(what, need, reg)
{
	ok = 0;
relock:
	/* 1. lock: CAS cleaner 0 -> me + 1 */
	if
	:: atomic { cleaner == 0 -> cleaner = me + 1; ok = 1; cw = 0 }
	:: atomic { cleaner != 0 -> ok = 0; cw = cleaner }
	fi;
	if
	:: ok
	:: !ok ->
		x = dead[cw - 1];                      /* proof of death */
		if
		:: !x ->
			if
			:: what == 0 -> goto unlocked  /* a live holder: it re-checks (5) */
			:: else ->                     /* registration must get the lock */
				atomic { cleaner == 0 || dead[cleaner - 1] }; goto relock
			fi
		:: x ->
			d_step {                       /* CAS dead value -> ours */
				if
				:: cleaner == cw -> cleaner = me + 1; ok = 1
				:: else -> ok = 0
				fi
			}
			if
			:: !ok -> goto relock
			:: ok
			fi;
			/* Finish the dead cleaner's release first. */
#ifndef NO_SEQ_REPAIR
			if
			:: cseq & 1 ->                 /* it died in the seqlock: recount */
				MAYDIE; relMsgs = cleanedMsgs + (releasing - head);
				MAYDIE; cseq++
			:: else
			fi;
#endif
			u = head;
			do
			:: u == releasing -> break
			:: else -> MAYDIE; d_step { lenw[u % CAP] = 0; val[u % CAP] = 0; u++ }
			od;
			MAYDIE; head = releasing;
			MAYDIE; d_step { cleanedMsgs = relMsgs; RINGSPACE; u = 0 }
		fi
	fi;
	MAYDIE;
	if
	:: what == 1 -> goto registered
	:: else
	fi;
	/* 2. target = min over the blocking subscriptions' cursors */
	nb = 0; tg = 255;
	u = 0;
	do
	:: u == NSUB -> break
	:: else ->
		if
		:: BLOCKING(u) ->
			x = cur[u];
			assert(x >= head && x <= tail);   /* validated: else ErrCorrupt */
			nb = 1;
			if :: x < tg -> tg = x :: else fi
		:: else
		fi;
		u++
	od;
	if
	:: !nb ->                  /* none: reclaim the published prefix, up to need */
		tg = head;
		do
		:: tg < tail && tg < need && lenw[tg % CAP] != 0 -> tg++
		:: else -> break
		od
	:: else
	fi;
	MAYDIE;
	if
	:: tg <= head -> goto unlock
	:: else
	fi;
	/* 3. count the messages of [head, tg): one per unit here */
	/* 4. seqlock-publish releasing and its count, zero, store head */
	cseq++;
	MAYDIE; releasing = tg;
	MAYDIE; relMsgs = cleanedMsgs + (tg - head);
	MAYDIE; cseq++;
	u = head;
	do
	:: u == tg -> break
	:: else -> MAYDIE; d_step { lenw[u % CAP] = 0; val[u % CAP] = 0; u++ }
	od;
	MAYDIE; head = tg;
	MAYDIE; d_step { cleanedMsgs = relMsgs; RINGSPACE; u = 0 }
	goto unlock;
registered:
	/* Registration (Subscribe): cursor and message count from the lane,
	 * then the subscription made visible, all under the lock. */
	REGISTER(reg);
	MAYDIE;
unlock:
	/* 5. unlock, then reload the minimum: moved past head -> again */
	atomic { cleaner = 0; tg = 255; nb = 0; u = 0; x = 0; cw = 0 }
#ifdef REG_PLAIN_UNLOCK
	if
	:: what == 1 -> goto unlocked          /* registration: just unlock */
	:: else
	fi;
#endif
#ifndef NO_RELOAD
	do
	:: u == NSUB -> break
	:: else ->
		if
		:: BLOCKING(u) -> x = cur[u]; nb = 1; if :: x < tg -> tg = x :: else fi
		:: else
		fi;
		u++
	od;
	if
	:: nb && tg > head -> d_step { tg = 0; nb = 0; u = 0; x = 0 }; what = 0; goto relock
	:: else
	fi;
#endif
unlocked:
	atomic { tg = 0; nb = 0; u = 0; x = 0; cw = 0; ok = 0 }
}

#ifdef P1LOCK_DIES
#define CANDIE_P 1
#else
#define CANDIE_P 0
#endif

/* Never overwrite what a blocking subscriber has not released. */
#define NOOVERWRITE(t) \
	assert(!BLOCKING(0) || (t) < cur[0] + CAP); \
	assert(!BLOCKING(1) || (t) < cur[1] + CAP)

proctype Producer(byte me)
{
	byte k, t, hc, need, what;
	byte ok, cw, x, u, tg, nb;
	byte c, mc, got;                               /* registration only (unused) */
	bool candie = (CANDIE_P && me == 1), restartok, retaken;

	hc = head;
	do
	:: k == NMP(me) -> break
	:: else ->
claim:
		t = tail;                              /* claimSpan */
		if
		:: t + 1 - hc > CAP ->
			hc = head;                     /* reload head */
			if
			:: t + 1 - hc > CAP -> goto waitroom
			:: else -> goto claim
			fi
		:: else
		fi;
		d_step {                               /* tail CAS */
			if
			:: tail == t -> tail = t + 1; ok = 1; mat[t] = MSG(me, k)
			:: else -> ok = 0
			fi
		}
		if
		:: !ok -> goto claim
		:: else
		fi;
		d_step {
			assert(lenw[t % CAP] == 0 && val[t % CAP] == 0);   /* invariant Z */
			NOOVERWRITE(t);
			val[t % CAP] = MSG(me, k)              /* the payload */
		}
		lenw[t % CAP] = 1;                     /* Commit (and the data ring) */
		d_step { k++; t = 0; ok = 0 }
		goto sent;
waitroom:
		/* Lane full: announce on the space doorbell, clean, check. */
		atomic { woken[me] = 0; pwait[me] = 1 }
		need = t + 1 - CAP;
		what = 0;
		lockclean(what, need, 0);
		hc = head;
		if
		:: t + 1 - hc <= CAP -> pwait[me] = 0; goto claim
		:: else
		fi;
#ifdef DURABLE_STUCK
end_wait:
#endif
		atomic { woken[me] || DEADWORK || RECLAIMABLE };   /* sleep: a ring, or the poll */
		/* the poll: remove ephemeral subscriptions whose holder is dead */
		u = 0;
		do
		:: u == NSUB -> break
		:: else ->
			if
			:: DEADSUB(u) ->
				d_step { if :: sstate[u] == 1 -> sstate[u] = 2 :: else fi }
				d_step { if :: sstate[u] == 2 -> sstate[u] = 0 :: else fi }
			:: else
			fi;
			u++
		od;
		u = 0;
		goto waitroom;
sent:
		skip
	od;
	pdone[me] = 1;
died:
	skip;
restart:
	skip
}

/* Subscriber deaths. */
#if defined(S1EPH_DIES) || defined(DURABLE_STUCK)
#define DIES_ANYWHERE 1
#else
#define DIES_ANYWHERE 0
#endif
#ifdef S1LOCK_DIES
#define DIES_LOCKED 1
#else
#define DIES_LOCKED 0
#endif
#if defined(S1DUR_DIES)
#define RESTARTS 1
#else
#define RESTARTS 0
#endif
#ifdef DURABLE_STUCK
#define STUCK 1
#else
#define STUCK 0
#endif

proctype Sub(byte s; bool late)
{
	byte c, mc, got, h, n, v, r, m, s1, s2;
	byte ok, cw, x, u, tg, nb, what, ret;
	byte me = SPEER(s);
	bool candie = (DIES_LOCKED && s == 1), restartok = (RESTARTS && s == 1), retaken;

	if
	:: late ->
#ifdef REG_NO_LOCK
		START;
		d_step { cur[s] = c; got = c; sstate[s] = 1 }
#else
		what = 1; ret = 0;
		goto dolock
#endif
		skip
	:: else ->
		d_step { c = cur[s]; mc = c; got = c }
	fi;
registered_sub:
	candie = (DIES_ANYWHERE && s == 1);
	if
	:: lossy[s] -> goto lossyread
	:: else
	fi;

	/* A blocking subscriber reads in place; release = one cursor store. */
bread:
	if
	:: c == NMT || (ALLFIN && c == tail) -> goto fin
	:: else
	fi;
	MAYDIE;
#ifndef NO_LAP_CHECK
	atomic { h = head; assert(h <= c) }            /* head never passes a blocking cursor */
#else
	h = c;
#endif
	n = lenw[c % CAP];
	if
	:: n != 0 && LAPOK(c, h) ->
		MAYDIE;
		v = val[c % CAP];
		d_step {
			assert(v == mat[c]);                   /* the record published at c */
			assert(c == got || (retaken && c + 1 == got));   /* in order, once */
			got = c + 1; v = 0; n = 0; h = 0
		}
		MAYDIE;
		d_step { c++; cur[s] = c; RINGSPACE }      /* release: store the cursor, ring */
	:: else ->
		d_step { n = 0; h = 0 }
#ifdef DURABLE_STUCK
end_bwait:
#endif
		atomic { (LAPOK(c, head) && lenw[c % CAP] != 0) || (ALLFIN && c == tail) }   /* data doorbell */
	fi;
	goto bread;

restart:
	/* The holder died; a new one proves it and takes the durable
	 * subscription over: it resumes at the cursor. */
	atomic { retaken = 1; c = cur[s]; h = 0; n = 0; v = 0 }
	goto bread;

	/* A lossy subscriber: not in the minimum; it checks releasing. */
lossyread:
	if
	:: c >= NMT || (ALLFIN && c == tail) -> goto fin
	:: else
	fi;
	r = releasing;
	if
	:: r > c -> goto lagged
	:: else
	fi;
#ifndef NO_LAP_CHECK
	h = head;
#else
	h = c;
#endif
	n = lenw[c % CAP];
	if
	:: n == 0 || !LAPOK(c, h) ->
		d_step { n = 0; h = 0; r = 0 }
#ifdef DURABLE_STUCK
end_lwait:
#endif
		atomic { (LAPOK(c, head) && lenw[c % CAP] != 0) || releasing > c || (ALLFIN && c == tail) };
		goto lossyread
	:: else
	fi;
	v = val[c % CAP];                              /* the copy */
#ifndef NO_POSTCHECK
	r = releasing;                                 /* seqlock: re-check */
	if
	:: r > c -> goto lagged                        /* maybe torn: discard */
	:: else
	fi;
#endif
	d_step {
		assert(v == mat[c]);                       /* intact, the record at c */
		assert(c == got);
		got = c + 1; c++; mc++;
		v = 0; n = 0; h = 0; r = 0
	}
	goto lossyread;
lagged:
	/* Read (releasing, releasingMsgs) consistently; report ErrLagged. */
	s1 = cseq;
	if
	:: s1 & 1 ->
#ifdef DURABLE_STUCK
end_lseq:
#endif
#ifdef LOSSY_WAITS
		atomic { !(cseq & 1) };
#else
		/* Open: wait for the cleaner; if it is provably dead, take its
		 * lock over, which finishes its release and closes the seqlock. */
		if                     /* lossy: wait for an even cleanSeq */
		:: atomic { !(cseq & 1) }
		:: atomic { cleaner != 0 && dead[cleaner - 1] } ->
			d_step { what = 0; ret = 1; r = 0; s1 = 0 }; goto dolock
		fi;
#endif
		goto lagged
	:: else
	fi;
	r = releasing;
	m = relMsgs;
	s2 = cseq;
	if
	:: s1 != s2 -> goto lagged
	:: else
	fi;
	d_step {
		assert(r > c);
		assert(m - mc == r - c);                   /* ErrLagged: exactly the messages skipped */
		c = r; mc = m; got = r;
		r = 0; m = 0; s1 = 0; s2 = 0; h = 0; n = 0; v = 0
	}
	goto lossyread;
	/* The subscriber's one use of the clean lock: to register (ret 0),
	 * or to take a dead cleaner's lock over (ret 1). */
dolock:
	lockclean(what, 0, s);
	if
	:: ret == 0 -> goto registered_sub
	:: else -> goto lagged
	fi;
fin:
	skip;
died:
	skip
}

#ifdef DURABLE_STUCK
/* A dead durable blocking subscription holds producers back for good: a
 * producer may be left waiting, but only behind it. */
active proctype Monitor()
{
end_mon:
	timeout ->
	assert(!(pwait[0] || pwait[NP - 1]) ||
	       (sstate[1] == 1 && !lossy[1] && dead[SPEER(1)] && cur[1] + CAP <= tail))
}
#endif

init
{
	atomic {
		lossy[0] = LOSSY0;
		lossy[1] = LOSSY1;
		eph[1] = EPH1;
		sstate[0] = 1;
#ifndef S1LATE
		sstate[1] = 1;
		run Sub(1, 0);
#else
		run Sub(1, 1);
#endif
		run Sub(0, 0);
		run Producer(0);
#if NP == 2
		run Producer(1);
#endif
	}
}
