package config

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// selfSigned writes a self-signed certificate and its key into dir and
// returns their paths.
func selfSigned(t *testing.T, dir, name string) (certFile, keyFile string) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "localhost"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour)}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	kder, _ := x509.MarshalECPrivateKey(key)
	certFile, keyFile = filepath.Join(dir, name+".crt"), filepath.Join(dir, name+".key")
	os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600)
	os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kder}), 0o600)
	return certFile, keyFile
}

// TestTLSValidation: the tls section's problems are placed at their line.
func TestTLSValidation(t *testing.T) {
	dir := t.TempDir()
	cert, key := selfSigned(t, dir, "a")
	_, otherKey := selfSigned(t, dir, "b")
	notPEM := filepath.Join(dir, "ca.txt")
	os.WriteFile(notPEM, []byte("not a certificate"), 0o600)
	missing := filepath.Join(dir, "missing.crt")

	const rest = "sources:\n  - {name: p, path: /w, auth: {type: header, secret: s}}\nsinks:\n  o: {type: stdout}\nrules:\n  - {name: all, when: \"true\", to: [o]}\n"
	cases := []struct {
		name, tls string
		want      []string // substrings of the problems, in order
	}{
		{"valid", "tls:\n  cert_file: " + cert + "\n  key_file: " + key + "\n", nil},
		{"valid mtls", "tls:\n  cert_file: " + cert + "\n  key_file: " + key + "\n  client_ca_file: " + cert + "\n", nil},
		{"cert alone", "tls:\n  cert_file: " + cert + "\n",
			[]string{"t.yaml:1:1: tls.key_file: required: TLS needs the private key file"}},
		{"key alone", "tls:\n  key_file: " + key + "\n",
			[]string{"t.yaml:1:1: tls.cert_file: required: TLS needs the certificate file"}},
		{"unreadable", "tls:\n  cert_file: " + missing + "\n  key_file: " + key + "\n",
			[]string{"t.yaml:2:14: tls.cert_file: cannot read " + missing + ": no such file or directory"}},
		{"not a pair", "tls:\n  cert_file: " + cert + "\n  key_file: " + otherKey + "\n",
			[]string{"t.yaml:2:14: tls.cert_file: cert_file " + cert + " and key_file " + otherKey + " are not a usable pair: tls: private key does not match public key"}},
		{"bad ca", "tls:\n  cert_file: " + cert + "\n  key_file: " + key + "\n  client_ca_file: " + notPEM + "\n",
			[]string{"t.yaml:4:19: tls.client_ca_file: client_ca_file " + notPEM + " holds no PEM certificate"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			f, err := Parse("t.yaml", []byte(c.tls+rest), nil)
			if c.want == nil {
				if err != nil {
					t.Fatalf("Parse: %v", err)
				}
				if !f.TLS.Enabled() {
					t.Fatal("tls not enabled")
				}
				return
			}
			if err == nil {
				t.Fatalf("Parse: no problem, want %q", c.want)
			}
			lines := strings.Split(err.Error(), "\n")
			if len(lines) != len(c.want) {
				t.Fatalf("problems:\n%v\nwant %d", err, len(c.want))
			}
			for i, w := range c.want {
				if !strings.HasPrefix(lines[i], w) {
					t.Errorf("problem %d:\n%s\nwant prefix\n%s", i, lines[i], w)
				}
			}
		})
	}
	// Without a tls section TLS is off.
	f, err := Parse("t.yaml", []byte(rest), nil)
	if err != nil || f.TLS.Enabled() {
		t.Fatalf("no tls section: err %v, enabled %v", err, f != nil && f.TLS.Enabled())
	}
}
