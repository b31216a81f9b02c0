// Package cmdwire maps the settings of package config onto the options of
// the packages that the binaries (cmd/*) wire together, once for all of
// them. Product packages never import config (internal/archtest); only the
// binaries and this package do.
package cmdwire

import (
	"github.com/paystream/paystream/config"
	"github.com/paystream/paystream/natsconn"
)

// NATSOptions are the NATS connection settings of cfg, for a client named
// name (natsconn.Options.Name; empty leaves nats.go's default).
func NATSOptions(cfg config.Config, name string) natsconn.Options {
	return natsconn.Options{
		URLs:      cfg.NATSURLs,
		CredsFile: cfg.NATSCreds,
		User:      cfg.NATSUser,
		Password:  cfg.NATSPassword,
		Token:     cfg.NATSToken,
		TLSCA:     cfg.NATSTLSCA,
		TLSCert:   cfg.NATSTLSCert,
		TLSKey:    cfg.NATSTLSKey,
		Name:      name,
	}
}
