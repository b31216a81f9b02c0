package gateway

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"os"
)

// TLSFiles names the PEM files of the TLS settings of a gateway client:
// PAYSTREAM_GATEWAY_CA_FILE, PAYSTREAM_GATEWAY_TLS_CERT and
// PAYSTREAM_GATEWAY_TLS_KEY. The zero value means the system roots and no
// client certificate.
type TLSFiles struct {
	// CA is a PEM file of the CA certificates that verify the gateway's
	// certificate, instead of the system roots. "" means the system roots.
	CA string
	// Cert and Key are a PEM client certificate and its private key, sent
	// to a gateway that asks for one (mutual TLS): both or neither.
	Cert, Key string
}

// Config returns the TLS configuration the files describe, for
// HTTPConfig.TLS: TLS 1.2 at least, the gateway's certificate verified
// against CA (or the system roots), and the client certificate when given.
// Certificate verification is always on. It fails when a file cannot be
// read or parsed, when CA holds no certificate, or when only one of Cert
// and Key is set; errors name the files, never their contents.
func (f TLSFiles) Config() (*tls.Config, error) {
	c := &tls.Config{MinVersion: tls.VersionTLS12}
	var errs []error
	if f.CA != "" {
		pem, err := os.ReadFile(f.CA)
		if err != nil {
			errs = append(errs, fmt.Errorf("gateway CA file: %w", err))
		} else {
			pool := x509.NewCertPool()
			if !pool.AppendCertsFromPEM(pem) {
				errs = append(errs, fmt.Errorf("gateway CA file %s: no PEM certificate in it", f.CA))
			}
			c.RootCAs = pool
		}
	}
	switch {
	case (f.Cert == "") != (f.Key == ""):
		errs = append(errs, errors.New("gateway TLS: a client certificate needs its key, and a key its certificate"))
	case f.Cert != "":
		cert, err := tls.LoadX509KeyPair(f.Cert, f.Key)
		if err != nil {
			// The error of LoadX509KeyPair names what is wrong, not the
			// key's bytes.
			errs = append(errs, fmt.Errorf("gateway TLS client certificate %s and key %s: %w", f.Cert, f.Key, err))
		} else {
			c.Certificates = []tls.Certificate{cert}
		}
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	return c, nil
}
