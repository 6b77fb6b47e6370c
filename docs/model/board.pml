/*
 * board.pml -- Promela model of a shmbus board cell (internal/board):
 * the writers' lock with takeover on proof of death, the two copies with
 * their sequence words and the current word, readers that never wait for
 * a writer, and a watcher on the board's doorbell (the eventcount of
 * ring/doorbell.go, as doorbell.pml models it in full).
 *
 * One cell.  NW writers each write WR times; a writer may die (MAXDEAD
 * in all) at any step while it holds the lock, leaving the lock word
 * naming it and its dead flag set (what proc.TagState proves).  A value
 * is two words; writer revision r writes r into both, so a reader that
 * returns two different words, or words other than the revision it
 * returns, read a torn value.
 *
 * Properties (safety run, ./pan):
 *  - no torn or mixed value: a reader accepts a copy only if both words
 *    equal the revision it returns;
 *  - revisions never go back for a reader;
 *  - readers never wait for a writer, dead or alive: the copy the current
 *    word names is never open (a reader that finds it open with the
 *    current word unchanged fails the assertion);
 *  - one writer at a time: a writer still holds the lock at every step
 *    of its write (only a dead holder's lock is taken over);
 *  - no lost wake-up: whenever the whole system is stuck (timeout), the
 *    watcher is not asleep while the key's revision is past the one it
 *    last saw (Monitor).  There is no backstop unless -DBACKSTOP, so a
 *    lost wake-up is a deadlock here.
 *
 * Switches:
 *  NW, WR, NR, MAXDEAD  writers, writes each, readers (two reads each),
 *                       deaths (default 2 2 1 0)
 *  NOWATCH              no watcher (the copy protocol alone: smaller)
 *  BACKSTOP             a watcher's sleep may end at any moment (the
 *                       Go code's timed sleeps); needed with deaths: a
 *                       writer killed between publishing and ringing, with
 *                       nobody writing after it, is only noticed by the
 *                       backstop (docs/semantics.md, "Boards").
 *  Deliberately broken (each must fail):
 *  SAME_COPY            the writer rewrites the current copy in place (a
 *                       plain seqlock): readers then wait for writers,
 *                       and for ever for a dead one.
 *  NO_SEQ_CHECK         the reader does not re-check the sequence: torn
 *                       values.
 *  STEAL_LIVE           a waiting writer takes the lock from a live
 *                       holder (a timeout without proof of death).
 *  RING_FIRST           the writer rings before it publishes: a lost
 *                       wake-up.
 */

#ifndef NW
#define NW 2
#endif
#ifndef WR
#define WR 2
#endif
#ifndef NR
#define NR 1
#endif
#ifndef MAXDEAD
#define MAXDEAD 0
#endif

byte lock;               /* 0 = free, else writer id + 1 */
bool dead[NW];
byte ndead;
byte rev;                /* the board revision */
byte cur;                /* current word: revision*2 + copy, 0 = never written */
byte seq[2];             /* copy sequence words: odd while open */
byte crev[2];            /* revision held by each copy */
byte d0[2];              /* the two words of each copy's value */
byte d1[2];
byte wdone;              /* writers finished (or dead) */

/* The doorbell: sequence, announced sleepers, rung bit; a FIFO futex
 * with one possible sleeper (the watcher). */
byte bseq;
byte nann;
bool rung;
bool asleep;
byte wafter;             /* the revision the watcher last saw */

#define REV(w) ((w) >> 1)

/* Die here, holding the lock, if deaths remain. */
#define MAYDIE \
	if \
	:: ndead < MAXDEAD -> atomic { ndead++; dead[id] = true; wdone++ }; goto gone \
	:: skip \
	fi

#define HOLDS assert(lock == id + 1)

inline ring() {
	atomic {
		if
		:: nann > 0 && !rung -> bseq++; rung = true; asleep = false
		:: else -> skip
		fi
	}
}

proctype Writer(byte id) {
	byte k, r, sp, s;
	for (k : 1 .. WR) {
		/* Take the lock: free, or from a holder proven dead. */
		do
		:: atomic { lock == 0 -> lock = id + 1; break }
		:: atomic { lock != 0 && lock != id + 1 && dead[lock - 1] ->
			/* Takeover; then a Kick: the dead one may have published
			 * without ringing. */
			lock = id + 1; bseq++; asleep = false; break }
#ifdef STEAL_LIVE
		:: atomic { lock != 0 && lock != id + 1 && !dead[lock - 1] -> lock = id + 1; break }
#endif
		od;
		MAYDIE;
		atomic { rev++; r = rev };
#ifdef SAME_COPY
		sp = cur & 1;
#else
		sp = 1 - (cur & 1);
#endif
		s = (seq[sp] | 1) + 2;
		seq[sp] = s;             /* open */
		MAYDIE; HOLDS;
		crev[sp] = r;
		d0[sp] = r;
		MAYDIE;
		d1[sp] = r;
		MAYDIE; HOLDS;
		seq[sp] = s + 1;         /* closed */
		MAYDIE; HOLDS;
#ifdef RING_FIRST
		ring();
#endif
		cur = r * 2 + sp;        /* published */
		MAYDIE; HOLDS;
		lock = 0;
#ifndef RING_FIRST
		ring();
#endif
		d_step { r = 0; sp = 0; s = 0 }
	}
	wdone++;
gone:
	skip
}

proctype Reader() {
	byte k, cw, c, s1, s2, v0, v1, cr, last;
	for (k : 1 .. 2) {
retry:
		cw = cur;
		if
		:: cw == 0 -> goto next
		:: else -> skip
		fi;
		c = cw & 1;
		s1 = seq[c];
#ifndef NO_SEQ_CHECK
		if
		:: s1 & 1 ->
			/* Open: only a lap may do that; if the current word still
			 * names this copy, the reader is waiting for a writer. */
			assert(cur != cw);
			goto retry
		:: else -> skip
		fi;
#endif
		cr = crev[c];
		v0 = d0[c];
		v1 = d1[c];
		s2 = seq[c];
#ifndef NO_SEQ_CHECK
		if
		:: s1 != s2 -> goto retry
		:: else -> skip
		fi;
#endif
		if
		:: cr != REV(cw) -> goto retry
		:: else -> skip
		fi;
		assert(v0 == cr && v1 == cr);    /* not torn, not mixed */
		assert(cr >= last);              /* never backwards */
		last = cr;
next:
		skip;
		/* Forget what the next read does not need (fewer states). */
		d_step { cw = 0; c = 0; s1 = 0; s2 = 0; v0 = 0; v1 = 0; cr = 0 }
	}
}

#ifndef NOWATCH
/* Watcher: Doorbell.Wait with the key's revision as its condition. */
proctype Watcher() {
	byte s;
	do
	:: REV(cur) > wafter -> wafter = REV(cur)          /* spinning */
	:: else ->
		atomic { nann++; rung = false; s = bseq };     /* announce */
		if
		:: REV(cur) > wafter ->                        /* re-check */
			atomic { nann--; s = 0 };
			wafter = REV(cur)
		:: else ->
			atomic {
				if
				:: bseq == s -> asleep = true
				:: else -> skip
				fi
			};
end_sleep:
			if
			:: !asleep -> skip
#ifdef BACKSTOP
			:: asleep -> asleep = false
#endif
			fi;
			atomic { nann--; s = 0 }
		fi
	od
}

active proctype Monitor() {
	timeout -> assert(!(asleep && REV(cur) > wafter))
}
#endif

init {
	byte i;
	atomic {
		for (i : 0 .. NW - 1) {
			run Writer(i)
		}
		i = 0;
		do
		:: i < NR -> run Reader(); i++
		:: else -> break
		od;
#ifndef NOWATCH
		run Watcher()
#endif
	}
}
