package testutil

import (
	"errors"
	"fmt"
	"os"
)

// Cross-process tests start their own test binary again as the other
// process: the child's environment names a role, and the test binary's
// TestMain runs that role instead of the tests. RunRole is that first step
// of TestMain, written once for every package that has such children.

// ErrUnknownRole is what Table's function returns for a role it does not
// have.
var ErrUnknownRole = errors.New("unknown role")

// RunRole runs the child-process role named by the environment variable
// env, if it is set, and then exits: with status 0 if run returned nil, 2
// if it returned an error wrapping ErrUnknownRole, and 1 with the error on
// stderr otherwise. If env is not set it returns at once, and TestMain goes
// on to run the tests.
func RunRole(env string, run func(role string) error) {
	role := os.Getenv(env)
	if role == "" {
		return
	}
	err := run(role)
	switch {
	case err == nil:
		os.Exit(0)
	case errors.Is(err, ErrUnknownRole):
		fmt.Fprintf(os.Stderr, "%s=%s: %v\n", env, role, err)
		os.Exit(2)
	}
	fmt.Fprintf(os.Stderr, "role %s: %v\n", role, err)
	os.Exit(1)
}

// Table is a run function for RunRole that looks the role up in roles.
func Table(roles map[string]func() error) func(role string) error {
	return func(role string) error {
		f, ok := roles[role]
		if !ok {
			return fmt.Errorf("%w %q", ErrUnknownRole, role)
		}
		return f()
	}
}
