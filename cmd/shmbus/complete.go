package main

import (
	"strings"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
)

// completeEnums registers shell completion for every flag of cmd with a
// fixed set of values (enumValue, listValue), so that the shell offers
// those values instead of file names.
func completeEnums(cmd *cobra.Command) {
	cmd.Flags().VisitAll(func(f *pflag.Flag) {
		switch v := f.Value.(type) {
		case enumValue:
			cmd.RegisterFlagCompletionFunc(f.Name, func(_ *cobra.Command, _ []string, toComplete string) ([]cobra.Completion, cobra.ShellCompDirective) {
				var out []cobra.Completion
				for _, a := range v.allowed {
					if strings.HasPrefix(a, toComplete) {
						out = append(out, a)
					}
				}
				return out, cobra.ShellCompDirectiveNoFileComp
			})
		case listValue:
			cmd.RegisterFlagCompletionFunc(f.Name, func(_ *cobra.Command, _ []string, toComplete string) ([]cobra.Completion, cobra.ShellCompDirective) {
				return completeList(v.allowed, toComplete), cobra.ShellCompDirectiveNoFileComp | cobra.ShellCompDirectiveNoSpace
			})
		}
	})
}

// completeList completes the last element of a comma-separated list:
// "pipe,shm" offers "pipe,shmbus-futex", ... (not the ones already given).
func completeList(allowed []string, toComplete string) []cobra.Completion {
	i := strings.LastIndexByte(toComplete, ',')
	head, last := toComplete[:i+1], toComplete[i+1:]
	given := strings.Split(head, ",")
	var out []cobra.Completion
	for _, a := range allowed {
		if strings.HasPrefix(a, last) && !contains(given, a) {
			out = append(out, head+a)
		}
	}
	return out
}
