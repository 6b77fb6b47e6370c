package board

// On amd64 stores become visible in program order and loads are not
// reordered with older loads (total store order), and the compiler keeps
// the memmove of copy between the atomic sequence loads and stores around
// it, so plain copies are ordered as the protocol needs.

func copyIn(dst, src []byte)  { copy(dst, src) }
func copyOut(dst, src []byte) { copy(dst, src) }
