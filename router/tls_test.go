package router

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"io"
	"math/big"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// testCA is a certificate authority made for one test.
type testCA struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
	pem  []byte
}

func newTestCA(t *testing.T, name string) *testCA {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: name},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	return &testCA{cert: cert, key: key, pem: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})}
}

// issue signs a certificate with serial for the server (127.0.0.1,
// localhost) or, when client, for a client; it returns the PEM cert and key.
func (ca *testCA) issue(t *testing.T, serial int64, client bool) (certPEM, keyPEM []byte) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(serial),
		Subject:      pkix.Name{CommonName: "localhost"},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		DNSNames:     []string{"localhost"},
		IPAddresses:  []net.IP{net.ParseIP("127.0.0.1")},
	}
	if client {
		tmpl.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}
		tmpl.Subject.CommonName = "platform"
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	if err != nil {
		t.Fatal(err)
	}
	kder, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kder})
}

// writeAtomic replaces path as certbot and cert-manager do: a new file
// renamed over the old one.
func writeAtomic(t *testing.T, path string, b []byte) {
	t.Helper()
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, b, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
}

// tlsServer is a router serving TLS with a certificate from ca, whose files
// are in certDir.
type tlsServer struct {
	*server
	ca       *testCA
	certFile string
	keyFile  string
	sink     *capture
}

func startTLSServer(t *testing.T, mtls bool) *tlsServer {
	t.Helper()
	ca := newTestCA(t, "test CA")
	certDir := t.TempDir()
	ts := &tlsServer{ca: ca, certFile: filepath.Join(certDir, "tls.crt"), keyFile: filepath.Join(certDir, "tls.key"), sink: newCapture(t)}
	c, k := ca.issue(t, 100, false)
	writeAtomic(t, ts.certFile, c)
	writeAtomic(t, ts.keyFile, k)
	tlsYAML := "tls: {cert_file: " + ts.certFile + ", key_file: " + ts.keyFile
	if mtls {
		caFile := filepath.Join(certDir, "client-ca.crt")
		writeAtomic(t, caFile, ca.pem)
		tlsYAML += ", client_ca_file: " + caFile
	}
	cfg := tlsYAML + "}\n" + baseConfig("{backend: memory}", "  crm: {type: http, url: "+ts.sink.URL+"}",
		`  - {name: all, when: "true", to: [crm]}`)
	ts.server = startServer(t, cfg)
	ts.url = strings.Replace(ts.url, "http://", "https://", 1)
	return ts
}

// client returns an HTTPS client trusting ts's CA, with no keep-alive so
// that every request is a new handshake, and the given client certificate.
func (ts *tlsServer) client(certs ...tls.Certificate) *http.Client {
	pool := x509.NewCertPool()
	pool.AddCert(ts.ca.cert)
	return &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{
		DisableKeepAlives: true,
		TLSClientConfig:   &tls.Config{RootCAs: pool, Certificates: certs},
	}}
}

// postTLS posts a sample event over c; it returns the status and the
// serial of the certificate the server presented.
func (ts *tlsServer) postTLS(t *testing.T, c *http.Client) (int, int64, error) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodPost, ts.url+"/webhook", bytes.NewReader(payloadFile(t, "channel.message_in.json")))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Authorization", testSecret)
	resp, err := c.Do(req)
	if err != nil {
		return 0, 0, err
	}
	defer resp.Body.Close()
	io.Copy(io.Discard, resp.Body)
	return resp.StatusCode, resp.TLS.PeerCertificates[0].SerialNumber.Int64(), nil
}

func TestTLSIngress(t *testing.T) {
	ts := startTLSServer(t, false)
	c := ts.client()

	status, serial, err := ts.postTLS(t, c)
	if err != nil || status != 200 || serial != 100 {
		t.Fatalf("HTTPS POST: status %d, serial %d, err %v; want 200 from serial 100", status, serial, err)
	}
	waitFor(t, 10*time.Second, "the event delivered to the sink", func() bool { return ts.sink.count() == 1 })

	// TLS 1.1 is refused during the handshake.
	old := ts.client()
	old.Transport.(*http.Transport).TLSClientConfig.MinVersion = tls.VersionTLS10
	old.Transport.(*http.Transport).TLSClientConfig.MaxVersion = tls.VersionTLS11
	if _, _, err := ts.postTLS(t, old); err == nil || !strings.Contains(err.Error(), "version") {
		t.Fatalf("TLS 1.1 client: err %v, want a protocol version failure", err)
	}

	// Plain HTTP to the TLS port gets no 200 (Go's client reports the TLS
	// server's answer as an error, or the server closes).
	plain := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	req, _ := http.NewRequest(http.MethodPost, strings.Replace(ts.url, "https://", "http://", 1)+"/webhook",
		bytes.NewReader(payloadFile(t, "channel.message_in.json")))
	req.Header.Set("Authorization", testSecret)
	if resp, err := plain.Do(req); err == nil {
		resp.Body.Close()
		if resp.StatusCode == 200 {
			t.Fatal("plain HTTP to the TLS port got 200")
		}
	}
	if n := ts.sink.count(); n != 1 {
		t.Fatalf("sink got %d events, want 1 (only the HTTPS one)", n)
	}

	// The admin listener is unaffected: plain HTTP.
	if a := ts.adminGet("/health"); a.status != 200 {
		t.Fatalf("admin /health over plain HTTP: %d %s", a.status, a.body)
	}

	// Renewed by file change: a new serial on the next handshake, no restart.
	c2, k2 := ts.ca.issue(t, 101, false)
	writeAtomic(t, ts.certFile, c2)
	writeAtomic(t, ts.keyFile, k2)
	waitFor(t, 10*time.Second, "the renewed certificate (serial 101) served after the file change", func() bool {
		_, serial, err := ts.postTLS(t, c)
		return err == nil && serial == 101
	})

	// A broken pair (a key that is not the certificate's) keeps the old one.
	_, kOther := ts.ca.issue(t, 999, false)
	writeAtomic(t, ts.keyFile, kOther)
	if err := ts.r.certs.Use(ts.r.Runtime().File.TLS, "test"); err == nil {
		t.Fatal("a mismatched pair loaded")
	}
	if status, serial, err := ts.postTLS(t, c); err != nil || status != 200 || serial != 101 {
		t.Fatalf("after a bad pair: status %d serial %d err %v; want 200 from serial 101 still", status, serial, err)
	}

	// Renewed and re-read on SIGHUP (what the SIGHUP handler calls:
	// Reload, the config file unchanged). The watch is stopped first, so
	// only the reload can load the new pair.
	ts.r.certs.Close()
	c3, k3 := ts.ca.issue(t, 102, false)
	writeAtomic(t, ts.certFile, c3)
	writeAtomic(t, ts.keyFile, k3)
	if err := ts.r.Reload("sighup"); err != nil {
		t.Fatalf("reload: %v", err)
	}
	if status, serial, err := ts.postTLS(t, c); err != nil || status != 200 || serial != 102 {
		t.Fatalf("after SIGHUP reload: status %d serial %d err %v; want 200 from serial 102", status, serial, err)
	}
}

// TestTLSReloadNewPaths: a reload that points tls at other files serves
// them at once.
func TestTLSReloadNewPaths(t *testing.T) {
	ts := startTLSServer(t, false)
	// Stop the watch so only the reload can load the new files.
	ts.r.certs.Close()
	dir := t.TempDir()
	c, k := ts.ca.issue(t, 200, false)
	cf, kf := filepath.Join(dir, "new.crt"), filepath.Join(dir, "new.key")
	writeAtomic(t, cf, c)
	writeAtomic(t, kf, k)
	b, _ := os.ReadFile(ts.config)
	b = bytes.Replace(b, []byte(ts.certFile), []byte(cf), 1)
	b = bytes.Replace(b, []byte(ts.keyFile), []byte(kf), 1)
	writeAtomic(t, ts.config, b)
	if err := ts.r.Reload("test"); err != nil {
		t.Fatalf("reload: %v", err)
	}
	if status, serial, err := ts.postTLS(t, ts.client()); err != nil || status != 200 || serial != 200 {
		t.Fatalf("after reload with new paths: status %d serial %d err %v; want 200 from serial 200", status, serial, err)
	}
	if p := ts.health().PendingRestart; len(p) != 0 {
		t.Fatalf("pending_restart %v, want none for new tls paths", p)
	}
}

func TestTLSClientCertificates(t *testing.T) {
	ts := startTLSServer(t, true)

	// No client certificate: the handshake fails, nothing is delivered.
	if status, _, err := ts.postTLS(t, ts.client()); err == nil {
		t.Fatalf("no client certificate: status %d, want a failed handshake", status)
	}
	// A certificate from another CA: refused too.
	other := newTestCA(t, "other CA")
	oc, ok := other.issue(t, 7, true)
	stranger, err := tls.X509KeyPair(oc, ok)
	if err != nil {
		t.Fatal(err)
	}
	// Sent whatever the server asks for: Go's client would otherwise keep
	// a certificate the server's CA list does not name to itself.
	sc := ts.client()
	sc.Transport.(*http.Transport).TLSClientConfig.GetClientCertificate = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
		return &stranger, nil
	}
	if status, _, err := ts.postTLS(t, sc); err == nil {
		t.Fatalf("client certificate from another CA: status %d, want a failed handshake", status)
	}
	if n := ts.sink.count(); n != 0 {
		t.Fatalf("sink got %d events from clients without a valid certificate", n)
	}
	// A certificate from the configured CA: 200 and delivered.
	cc, ck := ts.ca.issue(t, 8, true)
	mine, err := tls.X509KeyPair(cc, ck)
	if err != nil {
		t.Fatal(err)
	}
	if status, _, err := ts.postTLS(t, ts.client(mine)); err != nil || status != 200 {
		t.Fatalf("client certificate from the CA: status %d err %v, want 200", status, err)
	}
	waitFor(t, 10*time.Second, "the event delivered", func() bool { return ts.sink.count() == 1 })
}
