// Command shmbus creates, inspects and removes shmbus buses, and sends and
// receives messages and byte streams over them from the shell.
//
// Run "shmbus help" for the commands and "shmbus help COMMAND" for one.
package main

import (
	"fmt"
	"os"

	"github.com/shmbus/shmbus/bench"
)

func main() {
	// "shmbus bench" starts copies of this program as its peers.
	if handled, err := bench.ChildMain(); handled {
		if err != nil {
			fmt.Fprintln(os.Stderr, errorLine(err))
			os.Exit(exitFailure)
		}
		os.Exit(exitOK)
	}
	os.Exit(run(os.Args[1:], os.Stdin, os.Stdout, os.Stderr))
}
