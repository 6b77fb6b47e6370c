package board

import (
	"fmt"

	"github.com/shmbus/shmbus/layout"
)

// Check validates every cell of the board: states, keys and their hashes,
// that every key sits where a lookup finds it (no free cell between its
// home and its cell), that no key is bound twice, current words against
// the board revision, and the copies they name. It returns nil or an error
// wrapping ErrCorrupt for the first fault. A writer in progress is not a
// fault (it writes only the spare copy); a cell lock held by a process is
// not one either, dead or alive (the next writer takes it over).
func (b *Board) Check() error {
	top := b.rev.Load()
	seen := make(map[string]int)
	for i := 0; i < b.g.Cells; i++ {
		c := b.cell(i)
		switch s := c.state().Load(); s {
		case layout.CellFree:
			if cw := c.current().Load(); cw != 0 {
				return fmt.Errorf("%w: cell %d: free, with current word %#x", ErrCorrupt, i, cw)
			}
			continue
		case layout.CellKeyed:
		default:
			return fmt.Errorf("%w: cell %d: state %d", ErrCorrupt, i, s)
		}
		k, _, err := b.key(i)
		if err != nil {
			return err
		}
		if j, dup := seen[k]; dup {
			return fmt.Errorf("%w: cells %d and %d both hold key %q", ErrCorrupt, j, i, k)
		}
		seen[k] = i
		home := int(c.hash().Load() % uint64(b.g.Cells))
		for j := home; j != i; j = (j + 1) % b.g.Cells {
			if b.cell(j).state().Load() == layout.CellFree {
				return fmt.Errorf("%w: cell %d: key %q is past free cell %d on its probe path from cell %d", ErrCorrupt, i, k, j, home)
			}
		}
		cw := c.current().Load()
		if cw == 0 {
			continue // bound, not yet written
		}
		if rev := cw >> 1; rev > top {
			return fmt.Errorf("%w: cell %d: revision %d is past the board revision %d", ErrCorrupt, i, rev, top)
		}
		cp := b.copyOf(i, int(cw&1))
		s1 := cp.seq().Load()
		ch := cp.header()
		crev, n, flags := ch.rev, ch.len, ch.flags
		if cp.seq().Load() != s1 || c.current().Load() != cw {
			continue // a writer lapped us: what we read proves nothing
		}
		if s1&1 != 0 {
			return fmt.Errorf("%w: cell %d: current copy %d is open (sequence %d)", ErrCorrupt, i, cw&1, s1)
		}
		if err := layout.CheckCopy(cw>>1, crev, n, flags, b.g.MaxValue); err != nil {
			return fmt.Errorf("cell %d: %w", i, err)
		}
	}
	return nil
}
