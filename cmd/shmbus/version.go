package main

import (
	"fmt"
	"runtime"
	"runtime/debug"

	"github.com/shmbus/shmbus/layout"
	"github.com/spf13/cobra"
)

// moduleVersion is the version of the module shmbus was built from.
func moduleVersion() string {
	if bi, ok := debug.ReadBuildInfo(); ok && bi.Main.Version != "" {
		return bi.Main.Version
	}
	return "(devel)"
}

func (a *app) versionCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "version",
		Short: "Print the versions of shmbus, Go and the segment format",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			_, err := fmt.Fprintf(a.stdout, "shmbus %s\n%s %s/%s\nsegment format %d\n",
				moduleVersion(), runtime.Version(), runtime.GOOS, runtime.GOARCH, layout.Version)
			return err
		},
	}
}
