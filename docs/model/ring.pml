/*
 * ring.pml -- Promela model of one shmbus MPSC lane: claim, publish,
 * release, and recovery of claims left by dead producers.
 *
 * The Go code is the reference (ring/producer.go, ring/consumer.go,
 * ring/recover.go, ring/lane.go); docs/model/README.md maps every step of
 * this model to the statement it stands for.  Run it with
 * docs/model/check.sh, or by hand:
 *
 *	spin -a -DFIX_ALL ring.pml && gcc -O2 -DSAFETY -o pan pan.c && ./pan -m2000000
 *
 * Abstractions (see README.md for the full list):
 *  - one ring "unit" stands for one 8-byte-aligned record slot; a record is
 *    1 or 2 units (header, or header + one payload unit); positions are
 *    small integers starting at START that only grow (no 2^64 wrap);
 *  - every shared access is one atomic step and steps interleave
 *    sequentially consistently, as Go's sync/atomic does; a record's meta
 *    word is stored in the same step as its length word (the consumer only
 *    reads it after the length, so this hides no behaviour);
 *  - the consumer's sleeps (doorbell with backstop) are "wait until the
 *    condition holds" (doorbell.pml checks that no wake-up is lost); its
 *    periodic recovery after a backstop is "retry when any producer wrote
 *    anything or died since the last attempt": recovery is deterministic,
 *    so retrying on unchanged memory could only repeat the same answer;
 *  - a producer may die before any of its steps (at most MAXDEAD deaths);
 *    the consumer's proof of death is the dead[] flag, set in the same step
 *    as the death and never earlier; there is no time in the model.
 *
 * Switches (all off by default: the default is the Go code as it is,
 * which fails -- see README.md, "What the models found"):
 *  NO_RESTORE     drop the claim-record restore after a failed CAS
 *                 (claimSpan before commit 308fbdb): must DEADLOCK.
 *  FIX_ALL        all three proposed fixes below: every property holds.
 *  FIX_RECHECK    proposed fix: Recover re-loads the length at c after the
 *                 last state re-check and gives up if it is now published
 *                 (FIX_RECHECK_A: in rule (a) only, FIX_RECHECK_B: rule (b)).
 *  FIX_LIVE_SPAN  proposed fix: a live slot counts as a possible claimant
 *                 at c only if its record is a possible span (End > Pos).
 *  FIX_IDLE_RELEASE  proposed fix: the receive path releases padding it
 *                 skipped before it waits (Consumer.Poll already does).
 *  POLL           the consumer reads like Consumer.Poll: it may take
 *                 several records before one release, and always releases
 *                 before it waits.  Default: like the bus's receive
 *                 (Receive/TryReceive): one release per data record.
 *  FIX_RESET_POS  alternative fix: Claim.Reset (and a new Producer's
 *                 recPos) use a Pos no record can start at (the model uses
 *                 255; Go could use 1, as positions are multiples of 8).
 *  START=n        initial head and tail (shmbus.go uses 0, the value a
 *                 reset claim record has for Pos).
 *  MAXDEAD=n      how many producers may die (default 1).
 *  WL=n           workload (see below).
 */

#ifdef FIX_RECHECK
#define FIX_RECHECK_A
#define FIX_RECHECK_B
#endif
#ifdef FIX_ALL
#define FIX_RECHECK_A
#define FIX_RECHECK_B
#define FIX_LIVE_SPAN
#define FIX_IDLE_RELEASE
#endif

#ifndef CAP
#define CAP 4          /* ring capacity in units */
#endif
#ifdef FIX_RESET_POS
#define RESET_POS 255
#else
#define RESET_POS 0    /* Claim.Reset stores 0; Producer.recPos starts at 0 */
#endif
#ifndef START
#define START 0        /* shmbus.go: ring.InitLane(..., opts.startPosition = 0) */
#endif
#ifndef MAXDEAD
#define MAXDEAD 1
#endif
#ifndef WL
#define WL 1
#endif

/* Workloads: claim kinds per producer.  Kinds: 1 = one 1-unit record,
 * 2 = one 2-unit record (a payload unit follows the header), 3 = a batch
 * of two 1-unit records published by one commit. */
#if WL == 1
#define NP 2
#define NCL(p) 2
#define KIND(p, c) (p == 0 -> 2 : (c == 0 -> 1 : 2))                  /* P0: 2,2         P1: 1,2 */
#elif WL == 2
#define NP 2
#define NCL(p) 2
#define KIND(p, c) (p == 0 -> (c == 0 -> 3 : 2) : (c == 0 -> 1 : 2))  /* P0: batch,2     P1: 1,2 */
#elif WL == 3
#define NP 2
#define NCL(p) 2
#define KIND(p, c) (c == 0 -> 1 : 2)                                    /* P0: 1,2         P1: 1,2 */
#elif WL == 4
#define NP 3
#define NCL(p) 1
#define KIND(p, c) (p == 1 -> 2 : 1)                                    /* P0: 1  P1: 2  P2: 1 */
#elif WL == 5
#define NP 3
#define NCL(p) (p == 0 -> 2 : 1)
#define KIND(p, c) (p == 1 -> 1 : 2)                                    /* P0: 2,2  P1: 1  P2: 2 */
#endif

#define NS (NP + 1)    /* peer slots: the producers', then the consumer's own */
#define CSLOT NP       /* the consumer's slot: alive, claim record as Reset left it */

#if NP == 2
#define ALLFIN ((done[0] || dead[0]) && (done[1] || dead[1]))
#define ALLDELIVERED (delivered[0] == committed[0] && delivered[1] == committed[1])
#else
#define ALLFIN ((done[0] || dead[0]) && (done[1] || dead[1]) && (done[2] || dead[2]))
#define ALLDELIVERED (delivered[0] == committed[0] && delivered[1] == committed[1] && \
		      delivered[2] == committed[2])
#endif

/* Words of a unit: the length word (lenw, the commit flag: 0 = not
 * published) and the meta word.  Data meta names producer and sequence;
 * a payload unit holds payload bytes, which are not zero. */
#define PADM 200
#define DATAM(p, k)   (1 + (p) * 8 + (k))
#define PAYLOAD(p, k) (100 + (p) * 8 + (k))
#define ISDATA(m)     ((m) >= 1 && (m) < 1 + NP * 8)
#define MP(m)         (((m) - 1) / 8)
#define MK(m)         (((m) - 1) % 8)

byte tail = START;             /* lane tail: producers CAS it */
byte head = START;             /* lane head: the consumer stores it */
byte lenw[CAP];                /* length word of each unit */
byte meta[CAP];                /* meta word of each unit */
byte cPos[NS], cEnd[NS], cOK[NS];   /* claim records; Reset: all 0 */
bool dead[NP];                 /* provably dead (set when it dies, not before) */

/* Ghost state, for the properties only. */
byte own[CAP];                 /* 1 + producer whose successful claim covers the unit */
byte committed[NP];            /* records whose commit store was done */
byte delivered[NP];            /* records handed to the application */
bool done[NP];                 /* producer finished all its sends */
byte ndead;
bool changed;                  /* a producer wrote or died since the consumer's last look */
bool cidle;                    /* the consumer waits for data with nothing in flight */
byte cpos = START;             /* the consumer's read position, for the monitor */

/* Death: allowed before every step of a producer. */
#define DIE  atomic { ndead < MAXDEAD -> ndead++; dead[me] = 1; changed = 1 }; goto died
/* A producer step that writes shared memory / only reads it. */
#define W(...) if :: DIE :: d_step { __VA_ARGS__; changed = 1 } fi
#define R(...) if :: DIE :: __VA_ARGS__ fi

/* Producer.HasRoom for a claim of sz units at the current tail. */
#define WRAPPAD(t, sz) (((t) % CAP + (sz) > CAP) -> CAP - (t) % CAP : 0)
#define HASROOM(sz)    (tail + WRAPPAD(tail, sz) + (sz) - head <= CAP)

proctype Producer(byte me)
{
	byte c = 0;                    /* claim index */
	byte k = 0;                    /* sequence number of the next record */
	byte kind, sz, t, e, pad, off, f, hc, t2;
	byte rp = RESET_POS, re = 0;   /* recPos, recEnd: zero in a new Producer */
	bool ok;

	R(hc = head);                  /* NewProducer: head: l.head.Load() */
	do
	:: c == NCL(me) -> break
	:: else ->
		kind = KIND(me, c);
		sz = (kind == 1 -> 1 : 2);
claim:
		R(t = tail);                           /* claimSpan: t := l.tail.Load() */
		d_step {
			assert(hc <= t);               /* protocol.md 7.5: cached head never newer than a later tail */
			off = t % CAP;
			pad = WRAPPAD(t, sz);
			e = t + pad + sz
		}
		if
		:: e - hc > CAP ->
			R(hc = head);                  /* p.head = l.head.Load() */
			if
			:: t < hc || t - hc > CAP ->   /* stale t: used > capacity */
				R(t2 = tail);
				assert(t2 >= hc && t2 - hc <= CAP);   /* else ErrCorrupt */
				goto claim
			:: else
			fi;
			if
			:: e - hc > CAP ->             /* ErrFull; the caller waits (WaitRoom) and retries */
				if                     /* WaitRoom: until HasRoom */
				:: DIE
				:: atomic { HASROOM(sz) }
				fi;
				goto claim
			:: else
			fi
		:: else
		fi;
		W(cPos[me] = t);                       /* p.claim.set(t, end): Pos ... */
		W(cEnd[me] = e);                       /* ... then End */
		if                                     /* l.tail.CompareAndSwap(t, end) */
		:: DIE
		:: d_step {
			if
			:: tail == t ->
				tail = e; ok = 1;
				f = t;
				do
				:: f == e -> break
				:: else -> own[f % CAP] = me + 1; f++
				od;
				f = 0
			:: else -> ok = 0
			fi;
			changed = 1
		   }
		fi;
		if
		:: !ok ->
#ifndef NO_RESTORE
			W(cEnd[me] = re);              /* p.claim.restore(p.recPos, p.recEnd): End ... */
			W(cPos[me] = rp);              /* ... then Pos */
#endif
			goto claim
		:: else
		fi;
		W(cOK[me] = t + 1);                    /* p.claim.confirm(t) */
		rp = t; re = e;                        /* p.recPos, p.recEnd = t, end */
		if
		:: pad > 0 ->                          /* l.putRecord(off, pad, TypePadding, p.id) */
			W(meta[off] = PADM; lenw[off] = pad)
		:: else
		fi;
		f = (t + pad) % CAP;                   /* first record of the claim */
		if
		:: kind == 1 ->
			W(meta[f] = DATAM(me, k); lenw[f] = 1; committed[me]++);   /* Commit: the length Store */
			k++
		:: kind == 2 ->
			W(meta[f + 1] = PAYLOAD(me, k); lenw[f + 1] = PAYLOAD(me, k));   /* caller fills the payload */
			W(meta[f] = DATAM(me, k); lenw[f] = 2; committed[me]++);   /* Commit */
			k++
		:: kind == 3 ->
			W(meta[f + 1] = DATAM(me, k + 1); lenw[f + 1] = 1);        /* Commit: setLengthRelaxed of recs[1:] */
			W(meta[f] = DATAM(me, k); lenw[f] = 1; committed[me] = committed[me] + 2);  /* then recs[0]'s Store */
			k = k + 2
		fi;
		d_step { f = 0; t2 = 0; t = 0; e = 0; pad = 0; off = 0; ok = 0; c++ }
	od;
	if
	:: DIE                                         /* it may also die right after its last commit */
	:: done[me] = 1
	fi;
died:
	skip
}

/* Consumer.Release: zero [head, pos), then store the head. */
inline release()
{
	d_step {
		u = h;
		do
		:: u == pos -> break
		:: else -> lenw[u % CAP] = 0; meta[u % CAP] = 0; own[u % CAP] = 0; u++
		od;
		u = 0
	};
	head = pos;                                    /* l.head.Store(c.pos) */
	h = pos
}

/* l.padSpan(from, to), called by Recover: padding records split at the
 * ring's end.  Asserts the two recovery properties. */
inline padspan()
{
	do
	:: from == to -> break
	:: else ->
		d_step {
			u = from % CAP;
			cnt = to - from;
			if :: cnt > CAP - u -> cnt = CAP - u :: else fi;
			/* never pad over a record that is already published */
			assert(from != c0 || lenw[u] == 0);
			/* never pad over a live producer's claim */
			i = 0;
			do
			:: i == cnt -> break
			:: else ->
				assert(own[(u + i) % CAP] == 0 || dead[own[(u + i) % CAP] - 1]);
				i++
			od;
			meta[u] = PADM; lenw[u] = cnt;                 /* putRecord */
			from = from + cnt;
			i = 0; u = 0; cnt = 0
		}
	od
}

proctype Consumer()
{
	byte pos = START, h = START;   /* c.pos, c.head */
	byte n, m, c0, t, s, p, e, okv, pick, found, from, to, u, cnt, i;
	bool st, liveAt, cons;
	byte spos[NS], ends[NS];
	bool cand[NS];

loop:
	atomic {
		cpos = pos;
		s = 0;
		do
		:: s == NS -> break
		:: else -> cand[s] = 0; ends[s] = 0; spos[s] = 0; s++
		od;
		s = 0; e = 0; p = 0; okv = 0; pick = 0; found = 0; t = 0; n = 0; m = 0; c0 = 0;
		st = 0; liveAt = 0; cons = 0; from = 0; to = 0
	}
	/* Peek */
	if
	:: pos - h >= CAP -> goto nothing                /* a whole lap taken: ErrEmpty */
	:: else
	fi;
	d_step { n = lenw[pos % CAP]; m = meta[pos % CAP] }   /* l.lengthWord(off).Load(), l.meta(off) */
	if
	:: n != 0 ->
		d_step {
			/* Record.Check and the lap check: a failure is ErrCorrupt */
			assert(n <= CAP && pos % CAP + n <= CAP);
			assert(pos + n - h <= CAP);
			assert(m == PADM || ISDATA(m))
		}
		if
		:: m == PADM ->
			pos = pos + n;                 /* padding: taken, skipped */
			goto loop
		:: else ->
			/* Next, then the application gets the record, then Release */
			d_step {
				p = MP(m);
				assert(MK(m) == delivered[p]);        /* in order, no duplicate, no gap */
				assert(n == 1 || n == 2);
				assert(n == 1 || meta[(pos + 1) % CAP] == PAYLOAD(p, MK(m)));  /* payload intact */
				delivered[p]++;
				pos = pos + n;
				p = 0; m = 0; n = 0
			}
#ifdef POLL
			if
			:: release()                   /* Receive: release each record */
			:: skip                        /* Poll: take more, release later */
			fi;
#else
			release();
#endif
			goto loop
		fi
	:: else
	fi;
nothing:
#if defined(POLL) || defined(FIX_IDLE_RELEASE)
	if
	:: pos != h -> release()               /* Poll: c.Release() at the end, even after only padding */
	:: else
	fi;
#endif
	t = tail;                                      /* Consumer.InFlight: tail != pos? */
	if
	:: t == pos ->
		/* Nothing claimed at pos: sleep on the data doorbell until a
		 * record is published or space is claimed. */
		cidle = 1;
end_idle:
		atomic { (lenw[pos % CAP] != 0 || tail != pos) -> cidle = 0 };
		goto loop
	:: else
	fi;

	/* In flight: Consumer.Recover(peers). */
	changed = 0;
	c0 = pos;
	n = lenw[c0 % CAP];                            /* recover.go: length at c0 */
	if
	:: n != 0 -> goto loop
	:: else
	fi;
	t = tail;                                      /* t := l.tail.Load() */
	assert(t != c0 && t > c0 && t - c0 <= CAP);
	liveAt = 0;
	s = 0;
	do
	:: s == NS -> break
	:: else ->
		cand[s] = 0;
		if
		:: s == CSLOT ->                       /* the consumer's own slot: alive, never claims */
			spos[s] = cPos[s];
			if
#ifdef FIX_LIVE_SPAN
			:: cPos[s] == c0 && cEnd[s] > cPos[s] && cEnd[s] - cPos[s] <= CAP -> liveAt = 1
#else
			:: cPos[s] == c0 -> liveAt = 1
#endif
			:: else
			fi
		:: else ->
			st = dead[s];                  /* st := peers.State(s) */
			p = cPos[s];                   /* pos := cl.Pos.Load() */
			spos[s] = p;                   /* starts[pos] = true */
			if
			:: !st ->
				if
				:: p == c0 ->
#ifdef FIX_LIVE_SPAN
					e = cEnd[s];
					if
					:: e > p && e - p <= CAP -> liveAt = 1
					:: else
					fi
#else
					liveAt = 1
#endif
				:: else
				fi
			:: else ->
				e = cEnd[s];           /* end := cl.End.Load() */
				okv = cOK[s];          /* ok := cl.OK.Load() */
				if
				:: e < p || e - p > CAP || e == p || e < c0 || e > t ->
					skip           /* not a claim between c0 and t */
				:: else ->
					if
					:: okv == p + 1 && c0 >= p && c0 < e ->
						/* rule (a) */
						st = dead[s];  /* re-check peers.State(s) */
						if
						:: !st -> goto loop
						:: else
						fi;
#ifdef FIX_RECHECK_A
						n = lenw[c0 % CAP];
						if
						:: n != 0 -> goto loop
						:: else
						fi;
#endif
						from = c0; to = e;
						padspan();
						goto loop
					:: okv != p + 1 && p == c0 ->
						cand[s] = 1; ends[s] = e   /* rule (b) candidate */
					:: else
					fi
				fi
			fi
		fi;
		s++
	od;
	if
	:: liveAt -> goto wait
	:: else
	fi;
	/* rule (b): the consistent ends */
	pick = 0; found = 0; s = 0;
	do
	:: s == NS -> break
	:: else ->
		if
		:: cand[s] ->
			e = ends[s];
			d_step {
				cons = (e == t);
				i = 0;
				do
				:: i == NS -> break
				:: else -> cons = cons || spos[i] == e; i++
				od;
				i = 0
			}
			if
			:: !cons -> cons = (lenw[e % CAP] != 0)   /* l.lengthWord(e&mask).Load() != 0 */
			:: else
			fi;
			if
			:: cons && e != pick -> pick = e; found++
			:: else
			fi
		:: else
		fi;
		s++
	od;
	if
	:: found != 1 -> goto wait
	:: else
	fi;
	s = 0;
	do
	:: s == NS -> break
	:: else ->
		if
		:: cand[s] ->
			st = dead[s];                  /* re-check peers.State(s) */
			if
			:: !st -> goto wait
			:: else
			fi
		:: else
		fi;
		s++
	od;
#ifdef FIX_RECHECK_B
	n = lenw[c0 % CAP];
	if
	:: n != 0 -> goto loop
	:: else
	fi;
#endif
	from = c0; to = pick;
	padspan();
	goto loop

wait:
	/* Recover found nothing to do: sleep (backstop) and look again; only
	 * a change of shared memory can change the answer. */
	changed -> goto loop
}

/* When every producer has finished or died and the consumer waits with
 * nothing published and nothing claimed, every committed record must
 * have been delivered. */
active proctype Monitor()
{
end_mon:
	atomic {
		ALLFIN && cidle && tail == cpos && lenw[cpos % CAP] == 0 ->
		assert(ALLDELIVERED)
	}
}

#ifdef LIVENESS
/* Liveness (run without -DSAFETY, ./pan -a -f): every fair run ends with
 * every producer finished or dead and the consumer waiting with nothing
 * published or claimed -- no deadlock, no livelock, and the consumer
 * always gets past a dead producer's claim. */
#define FINAL (ALLFIN && cidle && tail == cpos && lenw[cpos % CAP] == 0)
ltl terminates { <> FINAL }
#endif

init
{
	byte i = 0;
	atomic {
		do                                     /* Claim.Reset of every slot */
		:: i < NS -> cPos[i] = RESET_POS; cEnd[i] = 0; cOK[i] = 0; i++
		:: else -> break
		od;
		i = 0;
		do
		:: i < NP -> run Producer(i); i++
		:: else -> break
		od;
		run Consumer()
	}
}
