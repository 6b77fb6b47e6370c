package ring

// Releasing less than was read, for subscriptions whose holder forwards
// messages and keeps them until the far side has acknowledged them (the
// daemon's SUB_RECV / SUB_ACK).

// ReleaseTo stores pos as the cursor, with msgs the number of messages
// begun before it, as Release does for the read cursor. pos must be a
// record boundary the reader has passed (a position Position returned);
// one behind the cursor as last stored, or past the read cursor, is
// ignored, so the stored cursor never moves back.
func (r *SubReader) ReleaseTo(pos, msgs uint64) error {
	if !ahead(pos, r.rel) || ahead(pos, r.pos) {
		return nil
	}
	r.e.Cursor[r.li].Store(pos) // pairs with the cleaner's Load in minBlocking
	r.e.Delivered[r.li].Store(msgs)
	r.rel = pos
	return r.Help()
}

// Rewind moves the read cursor back to the cursor as last stored: what was
// read since and not released is read again (by this reader, or by the
// next holder once this one closes).
func (r *SubReader) Rewind() {
	r.pos, r.msgs = r.rel, r.e.Delivered[r.li].Load()
	r.head = r.l.head.Load()
}
