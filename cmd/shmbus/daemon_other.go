//go:build !linux

package main

import (
	"errors"
	"fmt"

	"github.com/spf13/cobra"
)

func (a *app) daemonCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "daemon",
		Short: "Serve buses to peers in other languages over a UNIX socket (Linux only)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			return fmt.Errorf("daemon: %w: it needs Linux (SO_PEERCRED, pidfds, memfds)", errors.ErrUnsupported)
		},
	}
}
