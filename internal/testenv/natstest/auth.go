package natstest

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/jwt/v2"
	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nkeys"
)

// This file builds what servers that require authentication need: TLS
// certificates and an operator with a credentials file. Pass a server's
// requirement as Options.Configure.

// TLSFiles are the PEM files of a test CA and of a server certificate (for
// 127.0.0.1 and localhost) and a client certificate that it signed.
type TLSFiles struct {
	CA, ServerCert, ServerKey, ClientCert, ClientKey string
}

// NewTLSFiles writes fresh TLSFiles, valid for a day, to a temporary
// directory of t.
func NewTLSFiles(t testing.TB) TLSFiles {
	t.Helper()
	dir := t.TempDir()
	write := func(name, typ string, der []byte) string {
		p := filepath.Join(dir, name)
		must(t, os.WriteFile(p, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600))
		return p
	}
	now := time.Now()
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	must(t, err)
	caTmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "paystream test CA"},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(24 * time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	must(t, err)
	ca, err := x509.ParseCertificate(caDER)
	must(t, err)

	leaf := func(serial int64, cn string, usage x509.ExtKeyUsage) (certDER, keyDER []byte) {
		key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		must(t, err)
		tmpl := &x509.Certificate{
			SerialNumber: big.NewInt(serial),
			Subject:      pkix.Name{CommonName: cn},
			NotBefore:    now.Add(-time.Hour),
			NotAfter:     now.Add(24 * time.Hour),
			KeyUsage:     x509.KeyUsageDigitalSignature,
			ExtKeyUsage:  []x509.ExtKeyUsage{usage},
		}
		if usage == x509.ExtKeyUsageServerAuth {
			tmpl.IPAddresses = []net.IP{net.IPv4(127, 0, 0, 1)}
			tmpl.DNSNames = []string{"localhost"}
		}
		certDER, err = x509.CreateCertificate(rand.Reader, tmpl, ca, &key.PublicKey, caKey)
		must(t, err)
		keyDER, err = x509.MarshalECPrivateKey(key)
		must(t, err)
		return certDER, keyDER
	}
	var f TLSFiles
	f.CA = write("ca.pem", "CERTIFICATE", caDER)
	cert, key := leaf(2, "paystream nats server", x509.ExtKeyUsageServerAuth)
	f.ServerCert, f.ServerKey = write("server.pem", "CERTIFICATE", cert), write("server-key.pem", "EC PRIVATE KEY", key)
	cert, key = leaf(3, "paystream client", x509.ExtKeyUsageClientAuth)
	f.ClientCert, f.ClientKey = write("client.pem", "CERTIFICATE", cert), write("client-key.pem", "EC PRIVATE KEY", key)
	return f
}

// RequireMutualTLS returns an Options.Configure func for a server that
// serves TLS with f's server certificate and admits only clients that
// present a certificate signed by f's CA.
func (f TLSFiles) RequireMutualTLS(t testing.TB) func(*server.Options) {
	t.Helper()
	tc, err := server.GenTLSConfig(&server.TLSConfigOpts{
		CertFile: f.ServerCert, KeyFile: f.ServerKey, CaFile: f.CA, Verify: true,
	})
	must(t, err)
	return func(o *server.Options) {
		o.TLSConfig, o.TLS, o.TLSVerify, o.TLSTimeout = tc, true, true, 5
	}
}

// TLSURL returns the client URL of s with the tls:// scheme, which makes a
// client insist on TLS.
func (s *Server) TLSURL() string {
	return "tls://" + strings.TrimPrefix(s.URL(), "nats://")
}

// Operator is a NATS operator with a system account and one JetStream
// account, and a user of that account with a credentials file.
type Operator struct {
	Claims *jwt.OperatorClaims
	// SysPub and SysJWT are the system account's public key and JWT.
	SysPub, SysJWT string
	// AccPub and AccJWT are the JetStream account's.
	AccPub, AccJWT string
	// UserPub, UserJWT and UserSeed are the user's public key, JWT and
	// nkey seed; CredsFile holds the JWT and the seed.
	UserPub, UserJWT, UserSeed, CredsFile string
}

// NewOperator creates an Operator whose credentials file lies in a
// temporary directory of t.
func NewOperator(t testing.TB) *Operator {
	t.Helper()
	okp, err := nkeys.CreateOperator()
	must(t, err)
	opub, err := okp.PublicKey()
	must(t, err)
	account := func(jetStream bool) (pub, token string, kp nkeys.KeyPair) {
		kp, err := nkeys.CreateAccount()
		must(t, err)
		pub, err = kp.PublicKey()
		must(t, err)
		ac := jwt.NewAccountClaims(pub)
		if jetStream {
			ac.Limits.JetStreamLimits = jwt.JetStreamLimits{MemoryStorage: -1, DiskStorage: -1, Streams: -1, Consumer: -1}
		}
		token, err = ac.Encode(okp)
		must(t, err)
		return pub, token, kp
	}
	o := &Operator{}
	o.SysPub, o.SysJWT, _ = account(false)
	var akp nkeys.KeyPair
	o.AccPub, o.AccJWT, akp = account(true)

	oc := jwt.NewOperatorClaims(opub)
	oc.SystemAccount = o.SysPub
	otoken, err := oc.Encode(okp)
	must(t, err)
	o.Claims, err = jwt.DecodeOperatorClaims(otoken)
	must(t, err)

	ukp, err := nkeys.CreateUser()
	must(t, err)
	o.UserPub, err = ukp.PublicKey()
	must(t, err)
	seed, err := ukp.Seed()
	must(t, err)
	o.UserSeed = string(seed)
	o.UserJWT, err = jwt.NewUserClaims(o.UserPub).Encode(akp)
	must(t, err)
	creds, err := jwt.FormatUserConfig(o.UserJWT, seed)
	must(t, err)
	o.CredsFile = filepath.Join(t.TempDir(), "paystream.creds")
	must(t, os.WriteFile(o.CredsFile, creds, 0o600))
	return o
}

// Configure puts a server in operator mode, trusting o and resolving its
// accounts from memory. Use it as Options.Configure.
func (o *Operator) Configure(so *server.Options) {
	r := &server.MemAccResolver{}
	_ = r.Store(o.SysPub, o.SysJWT)
	_ = r.Store(o.AccPub, o.AccJWT)
	so.TrustedOperators = []*jwt.OperatorClaims{o.Claims}
	so.AccountResolver = r
	so.SystemAccount = o.SysPub
}

// must ends the test when err is not nil.
func must(t testing.TB, err error) {
	t.Helper()
	if err != nil {
		t.Fatalf("natstest: %v", err)
	}
}
