// Package cclient builds the C client of shmbus (shmbus.h, shmbus.c) and its
// command-line tool, shmbus-c, so that Go tests can run C peers in real
// processes. The C sources are embedded: Build works from any test binary of
// the module, wherever it runs.
//
//	bin, err := cclient.Build(t.TempDir())
//	if errors.Is(err, cclient.ErrNoCompiler) {
//		t.Skip(err)
//	}
//	out, err := exec.Command(bin, "recv", "orders", "-n", "1").Output()
//
// See README.md in this directory for the C API and the tool's commands.
package cclient

import (
	"bytes"
	"embed"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
)

//go:embed shmbus.h shmbus.c tools/shmbus-c.c
var sources embed.FS

// ErrNoCompiler is returned (wrapped) by Build when no C compiler is found.
var ErrNoCompiler = errors.New("no C compiler found")

// CFlags are the flags every build uses: the C client must compile
// warning-free with them.
var CFlags = []string{"-std=c11", "-Wall", "-Wextra", "-Werror"}

// Options configure BuildWith.
type Options struct {
	// CC is the compiler. Default: $CC if set, else the first of cc, gcc,
	// clang found on $PATH.
	CC string
	// Sanitize builds with -fsanitize=address,undefined (and -O1 -g), for
	// tests; the binary is named shmbus-c-san.
	Sanitize bool
}

// Compiler returns the C compiler Build would use, or an error wrapping
// ErrNoCompiler.
func Compiler(o Options) (string, error) {
	cands := []string{"cc", "gcc", "clang"}
	if o.CC != "" {
		cands = []string{o.CC}
	} else if env := os.Getenv("CC"); env != "" {
		cands = []string{env}
	}
	for _, c := range cands {
		if p, err := exec.LookPath(c); err == nil {
			return p, nil
		}
	}
	return "", fmt.Errorf("%w (looked for %s)", ErrNoCompiler, strings.Join(cands, ", "))
}

// Build compiles the shmbus-c tool into dir (which must exist) with -O2 and
// returns the binary's path. The error wraps ErrNoCompiler if there is no C
// compiler, and carries the compiler's output if the build fails.
func Build(dir string) (bin string, err error) { return BuildWith(dir, Options{}) }

// BuildWith is Build with options.
func BuildWith(dir string, o Options) (bin string, err error) {
	cc, err := Compiler(o)
	if err != nil {
		return "", err
	}
	src, err := os.MkdirTemp(dir, "shmbus-c-src-")
	if err != nil {
		return "", fmt.Errorf("cclient: %w", err)
	}
	defer os.RemoveAll(src)
	err = fs.WalkDir(sources, ".", func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, err := sources.ReadFile(path)
		if err != nil {
			return err
		}
		dst := filepath.Join(src, filepath.FromSlash(path))
		if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
			return err
		}
		return os.WriteFile(dst, b, 0o644)
	})
	if err != nil {
		return "", fmt.Errorf("cclient: writing sources: %w", err)
	}
	name, flags := "shmbus-c", []string{"-O2"}
	if o.Sanitize {
		name = "shmbus-c-san"
		flags = []string{"-O1", "-g", "-fno-omit-frame-pointer", "-fsanitize=address,undefined", "-fno-sanitize-recover=all"}
	}
	bin = filepath.Join(dir, name)
	args := append(append(append([]string{}, CFlags...), flags...), "-o", bin,
		filepath.Join(src, "shmbus.c"), filepath.Join(src, "tools", "shmbus-c.c"))
	cmd := exec.Command(cc, args...)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		return "", fmt.Errorf("cclient: %s %s: %w\n%s", cc, strings.Join(args, " "), err, out.String())
	}
	return bin, nil
}
