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

// versionInfo is what version prints, also its JSON form.
type versionInfo struct {
	Version       string `json:"version"`
	Go            string `json:"go"`
	OS            string `json:"os"`
	Arch          string `json:"arch"`
	SegmentFormat uint32 `json:"segment_format"`
}

func (a *app) versionCmd() *cobra.Command {
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "version",
		Short: "Print the versions of shmbus, Go and the segment format",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			v := versionInfo{moduleVersion(), runtime.Version(), runtime.GOOS, runtime.GOARCH, layout.Version}
			if asJSON {
				return writeJSON(a.stdout, v)
			}
			_, err := fmt.Fprintf(a.stdout, "shmbus %s\n%s %s/%s\nsegment format %d\n", v.Version, v.Go, v.OS, v.Arch, v.SegmentFormat)
			return err
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print the versions as JSON")
	return cmd
}
