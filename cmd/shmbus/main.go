// Command shmbus creates, inspects and removes shmbus buses, and sends and
// receives messages and byte streams over them from the shell.
//
// Run "shmbus help" for the commands and "shmbus help COMMAND" for one.
package main

import "os"

func main() {
	os.Exit(run(os.Args[1:], os.Stdin, os.Stdout, os.Stderr))
}
