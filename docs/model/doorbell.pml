/*
 * doorbell.pml -- Promela model of the shmbus doorbell (ring/doorbell.go):
 * an eventcount in one 64-bit word (sequence, announced sleepers, rung
 * bit), its waiters (Doorbell.Wait) and ringers (Doorbell.Ring), over a
 * futex (default) or a System V semaphore (-DSEM).
 *
 * The condition waited for is abstracted to a counter `avail`: published
 * records for the data doorbell (one waiter, the consumer), free room for
 * a lane's space doorbell (-DSPACE: two producers waiting for different
 * amounts of room, rung by the consumer's releases).  A ringer first
 * makes the condition true (the publishing store), then rings.
 *
 * Properties (safety run, ./pan):
 *  - no lost wake-up: whenever the whole system is stuck (spin's
 *    `timeout`), no waiter is asleep while its condition holds (Monitor);
 *    there is no backstop timeout unless -DBACKSTOP, so a lost wake-up is
 *    a real deadlock here.  The data configuration supplies exactly what
 *    the consumer takes, so there it must finish; in SPACE, waiter 1
 *    legitimately ends up asleep waiting for room that never comes;
 *  - no deadlock elsewhere: every other blocked state is an invalid end
 *    state;
 *  - the rung bit: between two announcements at most one ringer makes a
 *    wake call (assertion in ring()).
 *
 * Switches:
 *  SPACE         two waiters (need 1 and need 2), one ringer releasing
 *                one unit at a time (the space doorbell of a lane).
 *  SEM           System V semaphore sleeper (sem/sem_linux.go) instead
 *                of the futex.
 *  BROKEN_ORDER  the waiter re-checks BEFORE announcing: must lose a
 *                wake-up (invalid end state).
 *  NO_RUNG       ringers ignore the rung bit: must violate the "one
 *                wake call per announcement" assertion.
 *  NO_RUNG_CLEAR announce does not clear rung: must lose a wake-up.
 *  WAKE_ANY      FUTEX_WAKE wakes any n queued sleepers, not the oldest
 *                (what real-time priorities can do): with SPACE, loses a
 *                wake-up (protocol.md 3.2 says the backstop covers it).
 *  BACKSTOP      a sleep may also end by timeout at any moment.
 *  KICK          add a Doorbell.Kick (close / cancellation) at any moment.
 */

#ifdef SPACE
#define NW 2
#define NR 1
#define NEED(i)  ((i) + 1)       /* waiter 0 needs 1 unit of room, waiter 1 needs 2 */
#define QUOTA(i) ((i) * 3 + 1)   /* 1 and 4: waiter 1 ends up waiting for room that never comes */
#define PUBS 3                   /* the consumer releases 3 times, one unit each */
#else
#define NW 1
#define NR 2
#define NEED(i)  1
#define QUOTA(i) 4               /* the consumer takes 4 records */
#define PUBS 2                   /* each producer publishes 2 records */
#endif

/* The doorbell word: bits 0..31, 32..62, 63. */
byte seq;                /* sequence: the futex word */
byte nann;               /* announced sleepers */
bool rung;

byte avail;              /* the condition: records published / room free */

/* The futex: a FIFO queue of sleepers blocked in FUTEX_WAIT. */
bool asleep[NW];
byte q[NW];              /* waiter id + 1, oldest first */
byte qlen;

byte sem;                /* the semaphore's value (-DSEM) */

/* Ghost state. */
byte got[NW];            /* units taken by each waiter */
bool sleeping[NW];       /* blocked in FUTEX_WAIT / semtimedop */
byte wsa;                /* wake calls since the last announcement */

#define READY(i) (avail >= NEED(i))

/* FUTEX_WAKE(n): wake up to n sleepers, the oldest first (the kernel
 * queues the waiters of one futex FIFO within a priority), or any n of
 * them with WAKE_ANY. */
inline futex_wake(n)
{
#ifndef WAKE_ANY
	d_step {
		j = 0;
		do
		:: j < n && qlen > 0 ->
			asleep[q[0] - 1] = 0;
			k = 0;
			do
			:: k + 1 < qlen -> q[k] = q[k + 1]; k++
			:: else -> break
			od;
			qlen--; q[qlen] = 0;
			j++
		:: else -> break
		od;
		j = 0; k = 0
	}
#else
	atomic {                                /* one system call: atomic */
		j = 0;
		do
		:: j < n && qlen > 0 ->
			k = 0;
			do                      /* the kernel picks any queued sleeper */
			:: k + 1 < qlen -> k++
			:: break
			od;
			asleep[q[k] - 1] = 0;
			do
			:: k + 1 < qlen -> q[k] = q[k + 1]; k++
			:: else -> break
			od;
			qlen--; q[qlen] = 0;
			j++; k = 0
		:: else -> break
		od;
		j = 0
	}
#endif
}

/* sem.Set.Wake(n): GETVAL, then add max(0, n - value): two steps. */
inline sem_wake(n)
{
	v = sem;
	d_step { if :: n > v -> sem = sem + (n - v) :: else fi; v = 0 }
}

#ifdef SEM
#define wake(n) sem_wake(n)
#else
#define wake(n) futex_wake(n)
#endif

/* Doorbell.Ring, after the publishing store. */
inline ring()
{
	do
	:: d_step { ws = seq; wn = nann; wr = rung }              /* w := d.word.Load() */
		if
#ifdef NO_RUNG
		:: wn == 0 -> break
#else
		:: wn == 0 || wr -> break                          /* nobody to wake, or rung already */
#endif
		:: else ->
			d_step {                                   /* d.word.CompareAndSwap(w, nw) */
				if
				:: seq == ws && nann == wn && rung == wr ->
					seq++; rung = 1; ok = 1;
					assert(wsa == 0);          /* one wake call per announcement */
					wsa++
				:: else -> ok = 0
				fi
			}
			if
			:: ok ->
				wake(wn);                          /* d.sleeper.Wake(d.seq, n) */
				break
			:: else
			fi
		fi
	od;
	atomic { ws = 0; wn = 0; wr = 0; ok = 0 }
}

proctype Ringer(byte me)
{
	byte p = 0, ws, wn, j, k, v;
	bool wr, ok;

	do
	:: p == PUBS -> break
	:: else ->
		avail++;                   /* the publishing store (Commit / Release) */
		ring();
		p++
	od
}

#ifdef KICK
/* Doorbell.Kick (a process closing, a wait cancelled): bump the sequence
 * whatever rung says, keep rung, wake every announced sleeper. */
proctype Kicker()
{
	byte ws, wn, j, k, v;
	bool wr, ok;

	do
	:: d_step { ws = seq; wn = nann; wr = rung }
		d_step {
			if
			:: seq == ws && nann == wn && rung == wr -> seq++; ok = 1
			:: else -> ok = 0
			fi
		}
		if
		:: ok ->
			if
			:: wn > 0 ->
				wake(wn)
			:: else
			fi;
			break
		:: else
		fi
	od
}
#endif

proctype Waiter(byte me)
{
	byte s, ws, wn;
	bool wr, ok;

	do
	:: got[me] >= QUOTA(me) -> break
	:: else ->
		if
		:: atomic { READY(me) -> avail = avail - NEED(me); got[me] = got[me] + NEED(me) }
		                           /* the caller's own attempt (Peek, claimSpan) */
		:: else ->
			/* Doorbell.Wait(ready, ...) */
			if
			:: READY(me) -> goto ready          /* spin.Spin(ready) */
			:: else
			fi;
again:
#ifdef BROKEN_ORDER
			if
			:: READY(me) -> goto ready          /* re-check BEFORE announcing */
			:: else
			fi;
#endif
			do                                  /* s := d.announce() */
			:: atomic { ws = seq; wn = nann; wr = rung }
				d_step {
					if
					:: seq == ws && nann == wn && rung == wr ->
						nann++;
#ifndef NO_RUNG_CLEAR
						rung = 0;
#endif
						wsa = 0;
						s = seq; ok = 1
					:: else -> ok = 0
					fi
				}
				if
				:: ok -> break
				:: else
				fi
			od;
			atomic { ws = 0; wn = 0; wr = 0; ok = 0 };
#ifndef BROKEN_ORDER
			if
			:: READY(me) ->                     /* if ready() { d.withdraw(); return } */
				nann--;
				goto ready
			:: else
			fi;
#endif
			/* d.sleeper.Sleep(d.seq, s, until) */
#ifdef SEM
			if
			:: seq != s -> skip                 /* skipWait: the sequence moved */
			:: else -> sleeping[me] = 1
			fi;
end_sem:
			if
			:: !sleeping[me]
			:: atomic { sleeping[me] && sem > 0 -> sem--; sleeping[me] = 0 }  /* semtimedop(-1) */
#ifdef BACKSTOP
			:: sleeping[me] -> sleeping[me] = 0 /* timed out */
#endif
			fi;
#else
			d_step {                            /* FUTEX_WAIT: sleep only if seq == s */
				if
				:: seq == s -> asleep[me] = 1; sleeping[me] = 1; q[qlen] = me + 1; qlen++
				:: else
				fi
			}
end_futex:
			if
			:: atomic { !asleep[me] -> sleeping[me] = 0 }   /* woken (or EAGAIN) */
#ifdef BACKSTOP
			:: d_step {                         /* the deadline passed */
				asleep[me] -> asleep[me] = 0; sleeping[me] = 0;
				ws = 0;
				do
				:: q[ws] == me + 1 -> break
				:: else -> ws++
				od;
				do
				:: ws + 1 < qlen -> q[ws] = q[ws + 1]; ws++
				:: else -> break
				od;
				qlen--; q[qlen] = 0; ws = 0
			   }
#endif
			fi;
#endif
			s = 0;
			nann--;                             /* d.withdraw() */
			if
			:: READY(me) -> goto ready
			:: else -> goto again
			fi;
ready:
			skip                                /* Wait returned: the caller tries again */
		fi
	od
}

/* No lost wake-up: whenever the whole system is stuck, no waiter sleeps
 * while its condition holds. */
active proctype Monitor()
{
	byte i;
end_mon:
	timeout ->
	d_step {
		i = 0;
		do
		:: i < NW -> assert(!(sleeping[i] && READY(i))); i++
		:: else -> break
		od
	}
}

init
{
	byte i = 0;
	atomic {
		do
		:: i < NR -> run Ringer(i); i++
		:: else -> break
		od;
		i = 0;
		do
		:: i < NW -> run Waiter(i); i++
		:: else -> break
		od;
#ifdef KICK
		run Kicker()
#endif
	}
}
