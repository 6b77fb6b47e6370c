package bridge

import (
	"fmt"

	"github.com/nats-io/nats.go"
)

// Auth holds the bridge's credentials for the NATS server. The command
// fills it from files and the environment only, so that no secret is on a
// command line where ps shows it.
type Auth struct {
	User, Password string // user and password
	Token          string // or a token
	NKeySeedFile   string // or an nkey seed file
	CredsFile      string // or a JWT creds file (user JWT and nkey seed)
	CAFile         string // TLS: trust the server certificates this CA signed
	CertFile       string // TLS client certificate ...
	KeyFile        string // ... and its key
}

func (a Auth) options() ([]nats.Option, error) {
	var o []nats.Option
	if a.User != "" || a.Password != "" {
		o = append(o, nats.UserInfo(a.User, a.Password))
	}
	if a.Token != "" {
		o = append(o, nats.Token(a.Token))
	}
	if a.NKeySeedFile != "" {
		opt, err := nats.NkeyOptionFromSeed(a.NKeySeedFile)
		if err != nil {
			return nil, fmt.Errorf("%w: nkey seed: %v", ErrConfig, err)
		}
		o = append(o, opt)
	}
	if a.CredsFile != "" {
		o = append(o, nats.UserCredentials(a.CredsFile))
	}
	if a.CAFile != "" {
		o = append(o, nats.RootCAs(a.CAFile))
	}
	if a.CertFile != "" || a.KeyFile != "" {
		if a.CertFile == "" || a.KeyFile == "" {
			return nil, fmt.Errorf("%w: a TLS client certificate needs both a certificate and a key file", ErrConfig)
		}
		o = append(o, nats.ClientCert(a.CertFile, a.KeyFile))
	}
	return o, nil
}
